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


# ------------------------------------------------------------ Qwen2.5 / Qwen3-shaped chat templates
# Same shape as the real templates (ChatML turns; the first message, if a system one, is the system
# turn; later system messages are turns of their own), without their tool and reasoning branches.
_TURNS = (
    "{%- for m in messages %}"
    "{%- if m['role'] == 'user' or m['role'] == 'assistant' or (m['role'] == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
)
_FIRST_SYSTEM = "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
QWEN25_TEMPLATE = (  # a default system turn when the conversation has none
    "{%- if messages[0]['role'] == 'system' %}" + _FIRST_SYSTEM + "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}" + _TURNS + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
QWEN3_TEMPLATE = (  # no default system turn
    "{%- if messages[0]['role'] == 'system' %}" + _FIRST_SYSTEM + "{%- endif %}" + _TURNS
    + "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
SKILL = "Clean objects in the sinkbasin before placing them."


def with_template(tokenizer, template):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("template", ["qwen2.5", "qwen3", "chatml"])
@pytest.mark.parametrize("role", ["system", "user"])
def test_start_placement_equals_the_templates_rendering_of_block_then_messages(tokenizer, template, role):
    """``start``: the teacher prompt is what the template renders for [block, *messages]. With a
    Qwen2.5-style default system turn, a system block takes its place (the template drops the default
    when the first message is a system one) and a user block goes after it."""
    from verl_sdar.teacher import TeacherBuilder

    templates = {"qwen2.5": QWEN25_TEMPLATE, "qwen3": QWEN3_TEMPLATE, "chatml": tokenizer.chat_template}
    tok = with_template(tokenizer, templates[template])
    student = torch.tensor(chat_ids(tok, HISTORY))
    response = torch.tensor(tok.encode("<action>take mug 1</action>", add_special_tokens=False))
    builder = TeacherBuilder(tok, header="Skill: ", role=role, placement="start")
    rows = builder.build([student], [response], [SKILL])
    expected = chat_ids(tok, [{"role": role, "content": "Skill: " + SKILL}] + HISTORY)
    assert rows.prompts[0].tolist() == expected
    assert rows.input_ids[0][-len(response) :].tolist() == response.tolist()
    default = "You are Qwen, created by Alibaba Cloud."
    teacher_text = tok.decode(rows.prompts[0].tolist())
    if template == "qwen2.5" and role == "system":
        assert builder.blocks.replaces_default and rows.replaced_tokens == [len(builder.blocks.default_turn)]
        assert default not in teacher_text and teacher_text.count("<|im_start|>system") == 1
    else:
        assert rows.replaced_tokens == [0]
        assert teacher_text.count(default) == (template == "qwen2.5")
    # the block is tokenised once and never contains a default system turn
    assert default not in tok.decode(builder.blocks("other skill"))


def test_start_placement_keeps_the_prompts_own_system_turn_after_the_block(tokenizer):
    tok = with_template(tokenizer, QWEN25_TEMPLATE)
    own = [{"role": "system", "content": "You play ALFWorld."}] + HISTORY
    student = torch.tensor(chat_ids(tok, own))
    blocks = PrivilegedBlocks(tok, header="Skill: ")
    rows = splice(blocks, student, SKILL, torch.tensor([3]))
    assert rows.prompts[0].tolist() == chat_ids(tok, [{"role": "system", "content": "Skill: " + SKILL}] + own)
    assert rows.replaced_tokens == [0]


@pytest.mark.parametrize("role", ["system", "user"])
def test_before_last_user_block_never_carries_the_default_system_turn(tokenizer, role):
    tok = with_template(tokenizer, QWEN25_TEMPLATE)
    student = torch.tensor(chat_ids(tok, HISTORY))
    blocks = PrivilegedBlocks(tok, header="Skill: ", role=role, placement="before_last_user")
    rows = splice(blocks, student, SKILL, torch.tensor([3]))
    skill = {"role": role, "content": "Skill: " + SKILL}
    assert rows.prompts[0].tolist() == chat_ids(tok, HISTORY[:2] + [skill] + HISTORY[2:])


def test_budget_counts_the_replaced_default_turn(tokenizer):
    from verl_sdar.teacher import TeacherBuilder

    tok = with_template(tokenizer, QWEN25_TEMPLATE)
    student = torch.tensor(chat_ids(tok, HISTORY))
    expected = chat_ids(tok, [{"role": "system", "content": SKILL}] + HISTORY)
    exact = TeacherBuilder(tok, max_prompt_length=len(expected)).build([student], [torch.tensor([3])], [SKILL])
    assert exact.prompts[0].tolist() == expected and exact.removed_context_tokens == [0]
    short = TeacherBuilder(tok, max_prompt_length=len(expected) - 4).build([student], [torch.tensor([3])], [SKILL])
    teacher = short.prompts[0].tolist()
    block = PrivilegedBlocks(tok)(SKILL)
    assert len(teacher) == len(expected) - 4 and short.removed_context_tokens == [4]
    assert teacher[: len(block)] == block  # the skill is intact, in the default turn's place


# ------------------------------------------------------------------ raw_prefix (the reference's format)
def reference_teacher_prompt(tok, prompt_ids, text):
    """What the SDAR reference does: decode the prompt, prefix the raw text, re-tokenise."""
    from verl_sdar.teacher import raw_prefix_text

    decoded = tok.decode(prompt_ids, skip_special_tokens=False)
    return tok.encode(raw_prefix_text(text) + decoded, add_special_tokens=False)


@pytest.mark.parametrize("template", ["chatml", "qwen2.5", "qwen3"])
def test_raw_prefix_splice_equals_the_references_decode_and_re_encode(tokenizer, template):
    from verl_sdar.teacher import RAW_PREFIX_HEADER, TeacherBuilder

    templates = {"qwen2.5": QWEN25_TEMPLATE, "qwen3": QWEN3_TEMPLATE, "chatml": tokenizer.chat_template}
    tok = with_template(tokenizer, templates[template])
    student = chat_ids(tok, HISTORY)
    builder = TeacherBuilder(tok, format="raw_prefix", header="ignored: ", role="user")
    rows = builder.build([torch.tensor(student)], [torch.tensor([3, 4])], [SKILL])
    assert rows.prompts[0].tolist() == reference_teacher_prompt(tok, student, SKILL)
    assert tok.decode(rows.prompts[0].tolist()).startswith(f"{RAW_PREFIX_HEADER}{SKILL}\n\n<|im_start|>")
    assert rows.input_ids[0][-2:].tolist() == [3, 4] and rows.replaced_tokens == [0]
    assert builder.build([torch.tensor(student)], [torch.tensor([3])], [""]).prompts[0].tolist() == student


def test_raw_prefix_goes_after_bos_and_needs_start_placement(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.bos_token = "<|endoftext|>"
    blocks = PrivilegedBlocks(tok, format="raw_prefix")
    bos = tok.bos_token_id
    assert bos is not None and blocks.insertion_index([bos, 10, 11]) == 1 and blocks.insertion_index([10, 11]) == 0
    with pytest.raises(ValueError, match="placement must be 'start'"):
        PrivilegedBlocks(tokenizer, format="raw_prefix", placement="before_last_user")
    with pytest.raises(ValueError, match="unknown privileged format"):
        PrivilegedBlocks(tokenizer, format="prefix")


def test_raw_prefix_boundary_merge_caveat():
    """The splice tokenises the prefix alone. A prompt whose text starts with a special token (every
    chat-template prompt) re-tokenises identically; one starting with a newline can merge with the
    prefix's closing "\\n\\n" when the vocabulary has a longer newline token: then the token ids differ
    from the reference's re-encoding, the decoded text does not."""
    from verl_sdar.teacher import raw_prefix_text
    from verl_sdar.tiny_model import train_tokenizer

    corpus = ["para one\n\n\npara two\n\nthree\n"] * 50 + ["the skill text, privileged information"] * 20
    tok = train_tokenizer(corpus, 300)  # learns a "\n\n\n" token
    prefix = tok.encode(raw_prefix_text("skill"), add_special_tokens=False)
    chat = chat_ids(tok, [{"role": "user", "content": "hello"}])
    assert prefix + chat == reference_teacher_prompt(tok, chat, "skill")
    plain = tok.encode("\nhello", add_special_tokens=False)
    spliced, reference = prefix + plain, reference_teacher_prompt(tok, plain, "skill")
    assert spliced != reference and tok.decode(spliced) == tok.decode(reference)


def test_chat_template_kwargs_reach_every_rendering_qwen3_thinking_off(tmp_path):
    """Qwen3 with thinking off (verl's data.apply_chat_template_kwargs.enable_thinking=false): the
    generation prompt ends with an empty think block, so the protected prompt tail is longer."""
    from transformers import AutoTokenizer

    from verl_sdar.teacher import PrivilegedBlocks
    from verl_sdar.tiny_model import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "m", seed=0))
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
    )
    plain = PrivilegedBlocks(tokenizer)
    off = PrivilegedBlocks(tokenizer, chat_template_kwargs={"enable_thinking": False})
    think = tokenizer.encode("<think>\n\n</think>\n\n", add_special_tokens=False)
    assert off.tail_length == plain.tail_length + len(think)
    assert off("a skill") == plain("a skill")  # the block itself does not depend on it


@pytest.mark.parametrize("source_kind", ["column", "skills"])
def test_verls_padding_rows_get_no_block_and_never_feed_ucb(tokenizer, source_kind):
    """verl's batch balancing appends rows built by its own padding template (a prompt of EOS
    tokens, ``extra_info`` copied from the first real row). They get no privileged block, so the
    ``before_last_user`` placement (which needs a user turn) still builds, and UCB learns from the
    real rows only."""
    from pathlib import Path

    from verl.trainer.ppo.padding_utils import construct_minimal_padding_template

    from verl_sdar.privileged import ColumnSource, SkillSource, TeacherInputs
    from verl_sdar.teacher import TeacherBuilder

    prompt = torch.tensor(chat_ids(tokenizer, HISTORY))
    response = torch.tensor(tokenizer.encode("take mug 1", add_special_tokens=False))
    info = {"privileged": "Clean the mug at the sink first.", "task_type": "pick_clean_then_place"}
    real = {"prompts": prompt, "responses": response, "extra_info": info, "raw_prompt": HISTORY}
    pad, pad_tag = construct_minimal_padding_template(real, {"global_steps": 1}, tokenizer.eos_token_id)
    assert pad_tag["is_padding"] and pad["extra_info"] == info  # verl copies the real row's extra_info
    rows = TeacherInputs(
        extra_infos=[info, pad["extra_info"], pad["extra_info"]], prompts=[prompt, pad["prompts"], pad["prompts"]],
        raw_prompts=[HISTORY, HISTORY, HISTORY], scores=[1.0, 0.0, 0.0], real=[0],
        decode=lambda ids: tokenizer.decode(ids),
    )
    library = Path(__file__).resolve().parents[1] / "envs" / "alfworld" / "skills"
    source = ColumnSource("privileged") if source_kind == "column" else SkillSource(str(library), "ucb")
    texts = source.texts(rows)
    assert texts[0] and texts[1:] == ["", ""]
    source.feedback(rows)
    if source_kind == "skills":
        state = source.state_dict()["retriever"]
        pulls = sum(sum(b["pulls"]) for b in [*state["bandits"].values(), state["fallback"]])
        assert pulls == 1  # the real row's retrieval only
    builder = TeacherBuilder(tokenizer, placement="before_last_user", role="user")
    built = builder.build(rows.prompts, [response, pad["responses"], pad["responses"]], texts)
    assert torch.equal(built.prompts[1], pad["prompts"]) and built.inserted_tokens[1:] == [0, 0]
    assert built.inserted_tokens[0] > 0
    # without the fix a padding row gets the copied text, and the placement has no user turn to use
    with pytest.raises(ValueError):
        builder.build([pad["prompts"]], [pad["responses"]], [info["privileged"]])
