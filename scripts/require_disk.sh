#!/usr/bin/env bash
# Sourced by the setup scripts: require_disk GB WHAT stops with a message naming the folder and
# the free space when the file system under the repository has less than GB gigabytes free.
require_disk() {
  local need_gb=$1 what=$2 free_kb
  free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  if (( free_kb < need_gb * 1024 * 1024 )); then
    printf '%s needs about %s GB free in %s; %s GB are free\n' "$what" "$need_gb" "$PWD" \
      "$(awk -v kb="$free_kb" 'BEGIN {printf "%.1f", kb / 1048576}')" >&2
    exit 1
  fi
}
