"""Expert splicing: slot placement, duplicates, schedules (pure functions, hand-checked)."""

import pytest

from eg_grpo.rl.expert import experts_for_step, splice_group, strip_after_eos

EOS = 99


def test_experts_replace_the_last_slots_in_priority_order():
    group = [[1, 2, EOS], [3, 4, EOS], [5, 6, EOS], [7, 8, EOS]]
    result = splice_group(
        group, candidates=[[10, 11, EOS], [12, 13, EOS], [14, 15, EOS]], k=2, eos_token_id=EOS
    )
    assert result.expert_rows == [2, 3]
    assert group == [[1, 2, EOS], [3, 4, EOS], [10, 11, EOS], [12, 13, EOS]]
    assert result.duplicates == 0 and not result.had_positive


def test_expert_equal_to_a_kept_sample_is_skipped_and_counted():
    group = [[10, 11, EOS], [3, 4, EOS], [5, 6, EOS], [7, 8, EOS]]
    result = splice_group(group, candidates=[[10, 11, EOS], [12, 13, EOS]], k=2, eos_token_id=EOS)
    # [10, 11] is already sampled in slot 0 (kept), so only [12, 13] is spliced; slot 3 keeps its sample.
    assert result.duplicates == 1
    assert result.had_positive
    assert result.expert_rows == [2]
    assert group[2] == [12, 13, EOS] and group[3] == [7, 8, EOS]


def test_sample_in_an_expert_slot_does_not_block_that_expert():
    # The policy sampled the expert SID in slot 3, which the expert replaces anyway: no duplicate.
    group = [[1, 2, EOS], [3, 4, EOS], [5, 6, EOS], [10, 11, EOS]]
    result = splice_group(group, candidates=[[10, 11, EOS]], k=1, eos_token_id=EOS)
    assert result.duplicates == 0 and result.expert_rows == [3]


def test_no_positive_schedule_leaves_groups_with_a_hit_alone():
    group = [[10, 11, EOS], [3, 4, EOS], [5, 6, EOS]]
    before = [list(c) for c in group]
    result = splice_group(
        group, [[10, 11, EOS], [12, 13, EOS]], k=1, eos_token_id=EOS, only_without_positive=True
    )
    assert result.had_positive and result.expert_rows == [] and group == before


def test_repeated_candidates_are_spliced_once_and_no_candidates_means_no_change():
    group = [[1, EOS], [2, EOS], [3, EOS], [4, EOS]]
    result = splice_group(group, [[7, EOS], [7, EOS]], k=2, eos_token_id=EOS)
    assert result.expert_rows == [2] and group[3] == [4, EOS]
    assert splice_group(group, [], k=2, eos_token_id=EOS).expert_rows == []


def test_bad_expert_inputs_are_errors():
    with pytest.raises(ValueError, match="end with the end token"):
        splice_group([[1, EOS], [2, EOS]], [[7, 8]], k=1, eos_token_id=EOS)
    with pytest.raises(ValueError, match="no policy sample"):
        splice_group([[1, EOS], [2, EOS]], [[7, EOS]], k=2, eos_token_id=EOS)


def test_schedules():
    assert [experts_for_step("always", 2, s, 10) for s in (0, 5, 100)] == [2, 2, 2]
    assert [experts_for_step("decay", 2, s, 10) for s in (0, 4, 5, 6, 10, 20)] == [2, 2, 1, 1, 0, 0]


def test_strip_after_eos_keeps_the_first_end_token():
    assert strip_after_eos([5, 6, EOS, 0, 0], EOS) == (5, 6, EOS)
    assert strip_after_eos([5, 6, 7], EOS) == (5, 6, 7)
