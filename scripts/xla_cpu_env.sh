# shellcheck shell=bash
# Sourced before running JAX on the CPU (run_main_job.sh and run_tests.sh do): glibc malloc
# settings that keep XLA:CPU's per-step temporary buffers mapped between steps, instead of
# unmapping them after each step and faulting them back in, page by page, at the next one
# (docs/performance.md has the measurement). Entries already in GLIBC_TUNABLES win. The cost:
# the process keeps its peak heap resident. glibc reads them at start-up only; other C
# libraries ignore them.
_mimic_tunables=(glibc.malloc.mmap_threshold=2147483647 glibc.malloc.trim_threshold=2147483647
                 glibc.malloc.top_pad=268435456 glibc.malloc.hugetlb=1)
for _mimic_entry in "${_mimic_tunables[@]}"; do
  case ":${GLIBC_TUNABLES:-}:" in
    *":${_mimic_entry%%=*}="*) ;;
    *) GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}$_mimic_entry" ;;
  esac
done
export GLIBC_TUNABLES
unset _mimic_tunables _mimic_entry
