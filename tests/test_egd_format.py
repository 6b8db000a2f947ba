"""Official geometry and split rules on hand-worked cases."""

import random

from data_builders.mimic_cxr_egd import egd_format as fmt
from data_builders.mimic_cxr_egd import egd_reader


def test_letterbox_pads_reproduce_published_values():
  assert fmt.letterbox_pads(3056, 2544) == (0, 0, 534, 534)  # portrait
  assert fmt.letterbox_pads(2544, 3056) == (86, 86, 448, 448)  # landscape


def test_screen_to_original_reproduces_published_sample_row():
  # egd-format.md A.4: FPOGX .45224, FPOGY .33879 on 3056 x 2544, pads 0/0/534/534 -> 998, 1035
  assert fmt.screen_to_original(0.45224, 0.33879, 3056, 2544, (0, 0, 534, 534)) == (998, 1035)


def test_screen_to_original_off_image_is_small_negative():
  x, y = fmt.screen_to_original(0.1, 0.5, 3056, 2544, (0, 0, 534, 534))  # inside the left pad
  assert (x, y) == (int(2544 / 852 * -1), int(3056 / 1080 * -1)) == (-2, -2)


def test_official_split_matches_hand_computation():
  pids = [5, 3, 5, 9, 1, 2, 8, 7, 4, 6, 10, 3]
  split = egd_reader.official_split(pids, seed=42)
  unique = [5, 3, 9, 1, 2, 8, 7, 4, 6, 10]
  random.seed(42)
  random.shuffle(unique)
  assert [p for p in unique if split[p] == 'train'] == unique[:8]
  assert [split[p] for p in unique[8:]] == ['validation', 'test']


def test_official_split_uses_bankers_rounding():
  # 11 patients: train round(8.8) = 9, rest 2 -> validation round(1.0) = 1, test 1.
  split = egd_reader.official_split(range(11))
  assert sorted(split.values()).count('train') == 9
  # 13 patients: train round(10.4) = 10, rest 3 -> validation round(1.5) = 2 (even), test 1.
  split = egd_reader.official_split(range(13))
  assert list(split.values()).count('validation') == 2
  assert list(split.values()).count('test') == 1
