"""Teacher sequences at token level, with the project's tiny local tokenizer."""

import pytest
import torch

from verl_sdar.teacher import PrivilegedBlocks, build_teacher_rows, privileged_texts


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from verl_sdar.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)
    return AutoTokenizer.from_pretrained(str(path))


def chat_ids(tokenizer, messages, generation_prompt=True):
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_empty_privileged_text_reproduces_the_student_sequence(tokenizer):
    prompt = torch.tensor(chat_ids(tokenizer, [{"role": "user", "content": "pick a color"}]))
    response = torch.tensor(tokenizer.encode("red", add_special_tokens=False))
    blocks = PrivilegedBlocks(tokenizer)
    rows = build_teacher_rows([prompt], [response], [blocks("")], blocks.bos_token_id)
    assert torch.equal(rows.input_ids[0], torch.cat([prompt, response]))
    assert torch.equal(rows.prompts[0], prompt)
    assert rows.inserted_tokens == [0]


def test_privileged_block_matches_the_chat_template_and_keeps_response_ids(tokenizer):
    user = [{"role": "user", "content": "Reply with the secret code word."}]
    prompt = torch.tensor(chat_ids(tokenizer, user))
    response = torch.tensor(tokenizer.encode("apple", add_special_tokens=False))
    blocks = PrivilegedBlocks(tokenizer, header="Hint: ")
    rows = build_teacher_rows([prompt], [response], [blocks("The code word is apple.")], blocks.bos_token_id)
    teacher_prompt = rows.prompts[0].tolist()
    # identical to what the tokenizer's own chat template makes of [system(privileged), user]
    expected = chat_ids(tokenizer, [{"role": "system", "content": "Hint: The code word is apple."}] + user)
    assert teacher_prompt == expected
    assert tokenizer.decode(teacher_prompt).endswith(tokenizer.decode(prompt.tolist()))
    assert rows.input_ids[0][-len(response) :].tolist() == response.tolist()
    assert rows.position_ids[0].tolist() == list(range(len(rows.input_ids[0])))
    assert rows.attention_mask[0].sum().item() == len(rows.input_ids[0])
    assert rows.inserted_tokens[0] == len(expected) - len(prompt)


def test_each_distinct_text_is_tokenised_once(tokenizer):
    blocks = PrivilegedBlocks(tokenizer)
    first = blocks("same skill")
    assert blocks("same skill") is first
    assert blocks("other skill") != first


def test_privileged_texts_reads_the_key_and_rejects_missing_fields():
    assert privileged_texts([{"privileged": "a"}, {"privileged": None}, {"privileged": ""}], "privileged") == ["a", "", ""]
    with pytest.raises(KeyError, match="row 1: extra_info has no privileged-text field 'privileged'"):
        privileged_texts([{"privileged": "a"}, {"other": 1}], "privileged")
    with pytest.raises(TypeError, match="must be a string"):
        privileged_texts([{"privileged": 3}], "privileged")


def test_bos_stays_first_when_the_prompt_starts_with_it():
    prompt = torch.tensor([1, 10, 11])
    rows = build_teacher_rows([prompt], [torch.tensor([5])], [[1, 20, 21]], bos_token_id=1)
    assert rows.input_ids[0].tolist() == [1, 20, 21, 10, 11, 5]
