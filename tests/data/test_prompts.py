"""The one prompt builder (eg_grpo.data.prompts)."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from eg_grpo.data.prompts import build_prompt, completion_ids, completion_text
from eg_grpo.modeling import add_sid_tokens, build_tiny_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_plain_prompt_layout():
    assert build_prompt("red pen", [(3, 9, 1), (7, 2, 4)]) == (
        "history: <a_3><b_9><c_1><a_7><b_2><c_4>\nquery: red pen\nsid:"
    )
    # SIDs may come as text; whitespace in the query is normalised
    assert (
        build_prompt("  red \n pen ", ["<a_3><b_9><c_1>"]) == "history: <a_3><b_9><c_1>\nquery: red pen\nsid:"
    )


def test_empty_parts_drop_their_line():
    assert build_prompt("", [(1, 2, 3)]) == "history: <a_1><b_2><c_3>\nsid:"
    assert build_prompt("pen", []) == "query: pen\nsid:"
    assert build_prompt("", []) == "sid:"


def test_max_history_keeps_the_most_recent_items():
    history = [(i, 0, 0) for i in range(12)]
    prompt = build_prompt("", history, max_history=3)
    assert prompt == "history: <a_9><b_0><c_0><a_10><b_0><c_0><a_11><b_0><c_0>\nsid:"
    assert build_prompt("q", history, max_history=0) == "query: q\nsid:"


def test_titles_follow_their_sid_and_are_cut_alike():
    prompt = build_prompt("", [(1, 1, 1), (2, 2, 2)], history_titles=["Blue  pen", "Stapler"], max_history=1)
    assert prompt == "history: <a_2><b_2><c_2> Stapler;\nsid:"
    with pytest.raises(ValueError, match="one title per history item"):
        build_prompt("", [(1, 1, 1)], history_titles=["a", "b"])


def _chat_tokenizer():
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<|end|>": 1}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|end|>", unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_chat_template_wraps_the_same_body():
    tok = _chat_tokenizer()
    prompt = build_prompt("red pen", [(3, 9, 1)], tokenizer=tok, system_prompt="SYS")
    assert (
        prompt == "<|system|>SYS<|end|><|user|>history: <a_3><b_9><c_1>\nquery: red pen<|end|><|assistant|>"
    )
    no_system = build_prompt("", [], tokenizer=tok, system_prompt=None)
    assert no_system == "<|user|>recommend an item<|end|><|assistant|>"


def test_prompt_plus_completion_tokenises_on_the_boundary():
    tok = build_tiny_tokenizer(["history query sid red pen stapler"] * 20, vocab_size=300)
    vocab = add_sid_tokens(None, tok, (4, 4, 4))
    prompt = build_prompt("red pen", [(3, 1, 2), (0, 0, 1)])
    completion = completion_text((1, 2, 3), tok)
    assert completion == "<a_1><b_2><c_3>" + tok.eos_token
    ids_prompt = tok(prompt, add_special_tokens=False)["input_ids"]
    ids_all = tok(prompt + completion, add_special_tokens=False)["input_ids"]
    assert ids_all == ids_prompt + completion_ids((1, 2, 3), vocab)
    assert completion_ids("<a_1><b_2><c_3>", vocab) == completion_ids((1, 2, 3), vocab)
    # the history costs exactly 3 tokens per item (no separators)
    short = tok(build_prompt("red pen", [(3, 1, 2)]), add_special_tokens=False)["input_ids"]
    assert len(ids_prompt) - len(short) == 3
