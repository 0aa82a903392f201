"""CAI prompt templates from a config file: critique request, revision request, comparison.

Templates live in YAML (``configs/cai_templates.yaml``), not in code, so changing how the model
is asked is a config change that the records can be traced to: every rendered prompt carries
:meth:`CaiTemplates.hash` of its template (the template text and the few-shot examples). A
template must use exactly the placeholders of :data:`PLACEHOLDERS`: a missing one would render
every request without, say, the principle, and nothing downstream would notice.

Rendering goes through the tokenizer's chat template when it has one (few-shot examples become
earlier user/assistant turns), and is the plain text otherwise (examples first, one blank line
between turns).
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Template name -> the placeholders it must use (and the only ones it may use).
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "critique_request": ("principle", "prompt", "response"),
    "revision_request": ("principle", "prompt", "response", "critique"),
    "comparison_prompt": ("principle", "prompt", "response_a", "response_b"),
}


class TemplateError(ValueError):
    """A templates file is unusable; the message names the file and what to change."""


@dataclass(frozen=True)
class FewShot:
    """One worked example shown before a request: a user turn and the assistant's answer."""

    user: str
    assistant: str


@dataclass(frozen=True)
class CaiTemplates:
    """The templates of one file, checked against :data:`PLACEHOLDERS`."""

    path: str
    texts: dict[str, str]  # template name -> template text
    few_shot: tuple[FewShot, ...] = ()

    def hash(self, name: str) -> str:
        """16 hex digits of sha256 over the template text and the few-shot examples."""
        doc = {
            "template": self.texts[name],
            "few_shot": [[f.user, f.assistant] for f in self.few_shot],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def literal_texts(self) -> list[str]:
        """The fixed text of every template (placeholders dropped) and the few-shot turns:
        what a tokenizer built for these prompts should be trained on."""
        out = []
        for text in self.texts.values():
            out += [lit for lit, *_ in string.Formatter().parse(text) if lit.strip()]
        return out + [t for f in self.few_shot for t in (f.user, f.assistant)]

    def render(self, name: str, tokenizer: Any | None = None, **values: str) -> str:
        """Fill template ``name`` with ``values`` (exactly its placeholders); through the
        tokenizer's chat template (ending with the assistant's turn) when it has one."""
        if set(values) != set(PLACEHOLDERS[name]):
            raise TypeError(f"{name} takes {PLACEHOLDERS[name]}, got {sorted(values)}")
        text = self.texts[name].format(**values)
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            messages = []
            for f in self.few_shot:
                messages += [
                    {"role": "user", "content": f.user},
                    {"role": "assistant", "content": f.assistant},
                ]
            messages.append({"role": "user", "content": text})
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return "\n\n".join([f"{f.user}\n{f.assistant}" for f in self.few_shot] + [text])


def _placeholders(text: str, where: str) -> set[str]:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:  # a lone "{" or "}"
        raise TemplateError(f"{where}: {e}; write a literal brace as {{{{ or }}}}") from None
    return set(fields)


def _check_template(path: Path, name: str, text: Any) -> str:
    where = f"{path}: {name}"
    if not isinstance(text, str) or not text.strip():
        raise TemplateError(f"{where} must be a non-empty string")
    found, wanted = _placeholders(text, where), set(PLACEHOLDERS[name])
    if wanted - found:
        missing = ", ".join("{" + p + "}" for p in sorted(wanted - found))
        raise TemplateError(
            f"{where} is missing placeholder(s) {missing}: add them where the value belongs "
            f"(it must use {', '.join('{' + p + '}' for p in PLACEHOLDERS[name])})"
        )
    if found - wanted:
        extra = ", ".join("{" + p + "}" for p in sorted(found - wanted))
        raise TemplateError(
            f"{where} uses unknown placeholder(s) {extra}: only "
            f"{', '.join('{' + p + '}' for p in PLACEHOLDERS[name])} are filled "
            "(a literal brace is written {{ or }})"
        )
    return text


def _few_shot(path: Path, raw: Any) -> tuple[FewShot, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise TemplateError(f"{path}: few_shot must be a list of {{user: ..., assistant: ...}}")
    out = []
    for k, ex in enumerate(raw):
        if not (isinstance(ex, dict) and set(ex) == {"user", "assistant"}) or not all(
            isinstance(v, str) and v.strip() for v in ex.values()
        ):
            raise TemplateError(
                f"{path}: few_shot[{k}] must have exactly the non-empty strings user and assistant"
            )
        out.append(FewShot(ex["user"], ex["assistant"]))
    return tuple(out)


def load_templates(path: str | Path) -> CaiTemplates:
    """Read and check a templates file: the keys of :data:`PLACEHOLDERS` plus an optional
    ``few_shot``; a missing file, key or placeholder raises :class:`TemplateError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TemplateError(f"{path}: no such templates file (cai.templates)")
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        raise TemplateError(f"{path}: must be a mapping with keys {sorted(PLACEHOLDERS)}")
    unknown = set(doc) - set(PLACEHOLDERS) - {"few_shot"}
    if unknown:
        raise TemplateError(
            f"{path}: unknown key(s) {sorted(unknown)}; valid: {sorted(PLACEHOLDERS)}, few_shot"
        )
    missing = [name for name in PLACEHOLDERS if name not in doc]
    if missing:
        raise TemplateError(f"{path}: missing template(s) {missing}; add them to the file")
    texts = {name: _check_template(path, name, doc[name]) for name in PLACEHOLDERS}
    return CaiTemplates(str(path), texts, _few_shot(path, doc.get("few_shot")))
