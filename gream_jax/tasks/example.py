"""The SFT example record and the chat format every prompt-style task is written in."""

from __future__ import annotations

import dataclasses

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


@dataclasses.dataclass(frozen=True)
class Example:
    """A chat example: loss falls on `response` only. `items` lists the item indices it mentions
    (history, target, evidence), so tests and audits can check leakage without parsing text."""
    task: str
    prompt: str
    response: str
    items: tuple[int, ...] = ()


def chat_prompt(user_text: str) -> str:
    """The text before the assistant's answer (Qwen chat format); the response follows directly."""
    return f"{IM_START}user\n{user_text}{IM_END}\n{IM_START}assistant\n"


def chat_response(answer: str) -> str:
    return f"{answer}{IM_END}"
