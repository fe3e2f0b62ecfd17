"""Chat-template rendering and tokenization shared by SFT, SimPO and generation.

Rules that every path follows (the reference SimPO repo gets several of them wrong):
- the prompt is rendered WITH the generation prompt, so the assistant header is context,
  never part of the loss or of |y|;
- exactly one BOS: the template and the tokenizer's post-processor may both add one (the
  Gemma / Mistral double-BOS trap), so text is tokenized without special tokens and the BOS
  is set once by hand;
- a response ends with exactly one end-of-turn token: template text after it (Gemma's and
  Zephyr's trailing newline) is never generated, so it is not trained either;
- text in the messages is text: a special-token string inside a message (an answer quoting
  `<|eot_id|>`, a prompt holding a fake `<|start_header_id|>assistant<|end_header_id|>`) is encoded
  as ordinary tokens; only the template's own markup yields special ids. This is transformers'
  `sanitize_control_tokens` mechanism: the messages' special-token strings are marked before
  rendering and encoded as plain text.
"""
from __future__ import annotations

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import (
    _get_control_token_patterns,  # (marking regex, marker regex); private, pinned transformers==5.24.0
    encode_marked_chat,
    mark_control_tokens,
)

from simpo_recipes.errors import UserError

_PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


class ChatTemplateError(UserError, ValueError):
    """The tokenizer's chat template cannot be used for training."""


class BoundaryError(ValueError):
    """A row's text cannot be split into token sequences that decode to the rendered text; the
    message is the reason the row is dropped."""


def _patterns(tokenizer: PreTrainedTokenizerBase):
    """(regex of the special-token strings, regex of a marked one) for `mark_control_tokens`."""
    return _get_control_token_patterns(tuple(sorted(_special_tokens(tokenizer))))


def render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], add_generation_prompt: bool) -> str:
    """The template's text of `messages`, special-token strings of the messages marked as text
    (`_encode` reads them so; the template's own are left as they are)."""
    if tokenizer.chat_template is None:
        raise ChatTemplateError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template: set `chat_template` in the config"
        )
    marked = mark_control_tokens(messages, _patterns(tokenizer)[0])
    try:
        return tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError as e:  # a syntax error, an undefined name, or the template's own raise_exception
        roles = [m.get("role") for m in messages]
        raise ChatTemplateError(f"the chat template of {tokenizer.name_or_path!r} fails on a conversation with "
                                f"roles {roles}: {type(e).__name__}: {e}") from None


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids of rendered text, no special tokens added: template markup as special ids, marked
    special-token strings from the messages as ordinary tokens."""
    try:
        return encode_marked_chat(tokenizer, text)
    except ValueError:  # the tokenizer turns that string's plain text into the special token anyway
        raise BoundaryError("special-token text the tokenizer cannot encode as text") from None


def wants_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether this model family expects a BOS, from either the post-processor or the template."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    adds_bos = tokenizer("x").input_ids[:1] == [bos]
    return adds_bos or render(tokenizer, _PROBE[:1], True).startswith(tokenizer.bos_token)


def _with_one_bos(ids: list[int], tokenizer: PreTrainedTokenizerBase, bos_expected: bool) -> list[int]:
    bos = tokenizer.bos_token_id
    start = 0
    while bos is not None and start < len(ids) and ids[start] == bos:
        start += 1
    return ([bos] if bos_expected else []) + ids[start:]


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    # all_special_tokens misses added specials such as Llama-3's <|eot_id|> in transformers 5
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return [t for t in {*added, *tokenizer.all_special_tokens} if t]


def _end_of_turn(tokenizer: PreTrainedTokenizerBase, response_text: str) -> int:
    """Character index just past the first special token after the answer: its end-of-turn.
    What follows (a newline, or the next header that Llama-3's original template always adds)
    is never generated, so it is not trained."""
    visible = _patterns(tokenizer)[1].sub(lambda m: "\0" * len(m[0]), response_text)  # the messages' are text
    ends = [visible.index(t) + len(t) for t in _special_tokens(tokenizer) if t in visible]
    if not ends:
        raise ChatTemplateError(
            f"the chat template of {tokenizer.name_or_path!r} does not close assistant turns with a "
            "special token (e.g. eos_token): generation could never stop. Fix `chat_template`."
        )
    return min(ends)


def check_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Fail fast, before any data is processed, if the template is unusable for training."""
    prompt = render(tokenizer, _PROBE[:1], True)
    full = render(tokenizer, _PROBE, False)
    if not full.startswith(prompt):
        raise ChatTemplateError(
            f"chat template of {tokenizer.name_or_path!r}: the prompt rendered with the generation "
            f"prompt ({prompt!r}) is not a prefix of the full conversation ({full!r})"
        )
    _end_of_turn(tokenizer, full[len(prompt):])


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids a model is given to answer `messages`: generation prompt included, one BOS."""
    ids = _encode(tokenizer, render(tokenizer, messages, add_generation_prompt=True))
    return _with_one_bos(ids, tokenizer, wants_bos(tokenizer))


def encode_response(
    tokenizer: PreTrainedTokenizerBase, prompt_messages: list[dict], response: dict
) -> tuple[list[int], list[int]]:
    """(prompt_ids, response_ids) such that prompt_ids is exactly what generation sees and
    response_ids is what the model must generate after it, end-of-turn token included."""
    prompt_text = render(tokenizer, prompt_messages, add_generation_prompt=True)
    full_text = render(tokenizer, prompt_messages + [response], add_generation_prompt=False)
    if not full_text.startswith(prompt_text):
        raise ChatTemplateError(f"rendered prompt is not a prefix of the rendered conversation: {prompt_text!r}")
    response_text = full_text[len(prompt_text):]
    response_text = response_text[: _end_of_turn(tokenizer, response_text)]
    prompt_ids = _encode(tokenizer, prompt_text)
    joint_ids = _encode(tokenizer, prompt_text + response_text)
    if joint_ids[: len(prompt_ids)] == prompt_ids:
        response_ids = joint_ids[len(prompt_ids):]
    else:
        # A BPE merge crosses the boundary: keep the generation-time prompt and tokenize the
        # response alone, but only if the pair still decodes to the rendered text.
        response_ids = _encode(tokenizer, response_text)
        decoded = tokenizer.decode(prompt_ids + response_ids)
        if decoded != tokenizer.decode(joint_ids):
            raise BoundaryError("tokens merge at prompt/response")
    return _with_one_bos(prompt_ids, tokenizer, wants_bos(tokenizer)), response_ids


def encode_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, assistant_mask) for SFT: 1 on every assistant turn's tokens up to and
    including its end-of-turn token, 0 on everything the model is given. Each turn is what
    `encode_response` gives for its context: the ids generation sees, then the answer's."""
    ids: list[int] = []
    mask: list[int] = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt_ids, response_ids = encode_response(tokenizer, messages[:i], message)
            if prompt_ids[: len(ids)] != ids:  # the earlier turns tokenize differently inside the longer context
                raise BoundaryError("tokens merge at prompt/response")
            mask += [0] * (len(prompt_ids) - len(ids)) + [1] * len(response_ids)
            ids = prompt_ids + response_ids
    return ids, mask
