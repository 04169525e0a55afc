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


def splice(blocks, prompt, text, response, **kwargs):
    ids = prompt.tolist()
    block = blocks(text)
    k = blocks.insertion_index(ids) if block else 0
    c = blocks.cut_index(ids, k) if block else 0
    return build_teacher_rows([prompt], [response], [block], [k], cut_from=[c], keep_tail=blocks.tail_length, **kwargs)


HISTORY = [
    {"role": "user", "content": "You are in a kitchen. Your task is to: put a clean mug on the table."},
    {"role": "assistant", "content": "<think>find the mug</think><action>go to countertop 1</action>"},
    {"role": "user", "content": "On the countertop 1, you see a mug 1. Admissible actions: take mug 1"},
]


def test_empty_privileged_text_reproduces_the_student_sequence(tokenizer):
    prompt = torch.tensor(chat_ids(tokenizer, [{"role": "user", "content": "pick a color"}]))
    response = torch.tensor(tokenizer.encode("red", add_special_tokens=False))
    blocks = PrivilegedBlocks(tokenizer)
    rows = splice(blocks, prompt, "", response)
    assert torch.equal(rows.input_ids[0], torch.cat([prompt, response]))
    assert torch.equal(rows.prompts[0], prompt)
    assert rows.inserted_tokens == [0]


def test_privileged_block_matches_the_chat_template_and_keeps_response_ids(tokenizer):
    user = [{"role": "user", "content": "Reply with the secret code word."}]
    prompt = torch.tensor(chat_ids(tokenizer, user))
    response = torch.tensor(tokenizer.encode("apple", add_special_tokens=False))
    blocks = PrivilegedBlocks(tokenizer, header="Hint: ")
    rows = splice(blocks, prompt, "The code word is apple.", response)
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
    rows = [{"privileged": "a"}, {"privileged": None}, {"privileged": ""}]
    assert privileged_texts(rows, "privileged") == ["a", "", ""]
    with pytest.raises(KeyError, match="row 1: extra_info has no privileged-text field 'privileged'"):
        privileged_texts([{"privileged": "a"}, {"other": 1}], "privileged")
    with pytest.raises(TypeError, match="must be a string"):
        privileged_texts([{"privileged": 3}], "privileged")


@pytest.mark.parametrize("placement", ["start", "before_last_user"])
@pytest.mark.parametrize("role", ["system", "user"])
@pytest.mark.parametrize("left_pad", [0, 5])
def test_multi_turn_prompts_with_and_without_left_padding_match_the_template(tokenizer, placement, role, left_pad):
    student = chat_ids(tokenizer, HISTORY)
    pad = tokenizer.pad_token_id
    padded = torch.tensor([pad] * left_pad + student)
    mask = torch.tensor([0] * left_pad + [1] * len(student))
    response = torch.tensor(tokenizer.encode("<action>take mug 1</action>", add_special_tokens=False))
    blocks = PrivilegedBlocks(tokenizer, header="Skill: ", role=role, placement=placement)
    text = "Clean objects in the sinkbasin before placing them."
    block = blocks(text)
    k = blocks.insertion_index(student)
    rows = build_teacher_rows([padded], [response], [block], [k], prompt_attention_masks=[mask])
    skill = {"role": role, "content": "Skill: " + text}
    messages = [skill] + HISTORY if placement == "start" else HISTORY[:2] + [skill] + HISTORY[2:]
    assert rows.prompts[0].tolist() == chat_ids(tokenizer, messages)
    assert rows.input_ids[0][-len(response) :].tolist() == response.tolist()
    assert rows.removed_context_tokens == [0]


def test_over_budget_rows_lose_oldest_context_never_the_skill(tokenizer):
    student = torch.tensor(chat_ids(tokenizer, HISTORY))
    response = torch.tensor([7, 8, 9])
    blocks = PrivilegedBlocks(tokenizer, placement="before_last_user")
    block = blocks("Clean objects in the sinkbasin.")
    budget = len(student) + len(block) - 6
    rows = splice(blocks, student, "Clean objects in the sinkbasin.", response, max_prompt_length=budget)
    teacher = rows.prompts[0].tolist()
    assert len(teacher) == budget and rows.truncated == [True] and rows.removed_context_tokens == [6]
    k = blocks.insertion_index(student.tolist())
    assert teacher[k : k + len(block)] == block  # the skill is intact
    assert teacher[-blocks.tail_length :] == student.tolist()[-blocks.tail_length :]  # generation prompt kept
    assert rows.input_ids[0][-3:].tolist() == [7, 8, 9]
    # a block that cannot fit is an error, not a silent cut
    with pytest.raises(ValueError, match="does not fit the teacher prompt budget"):
        splice(blocks, student, "Clean objects in the sinkbasin.", response, max_prompt_length=len(block) + 3)


def test_bos_stays_first_when_the_prompt_starts_with_it():
    prompt = torch.tensor([1, 10, 11])
    rows = build_teacher_rows([prompt], [torch.tensor([5])], [[20, 21]], [1])
    assert rows.input_ids[0].tolist() == [1, 20, 21, 10, 11, 5]


DEFAULT_SYSTEM_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful agent.<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def test_before_last_user_keeps_a_default_system_prompt_first(tokenizer):
    """Templates that add a default system turn (Qwen2.5 style): the skill goes after it."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = DEFAULT_SYSTEM_TEMPLATE
    student = chat_ids(tok, HISTORY)
    blocks = PrivilegedBlocks(tok, placement="before_last_user")
    block = blocks("Heat food in the microwave.")
    rows = build_teacher_rows([torch.tensor(student)], [torch.tensor([3])], [block], [blocks.insertion_index(student)])
    rendered = tok.apply_chat_template(
        [{"role": "system", "content": "You are a helpful agent."}] + HISTORY[:2]
        + [{"role": "system", "content": blocks.header + "Heat food in the microwave."}] + HISTORY[2:],
        tokenize=False, add_generation_prompt=True,
    )
    assert tok.decode(rows.prompts[0].tolist()) == rendered
