"""Prompt templates of the reasoning stage (NOTES §1 steps 1 and 4).

A :class:`PromptTemplate` is a ``str.format`` text plus how to send it:

- ``kind="chat"``: the rendered text is the user message of a chat (instruction-tuned
  models, OpenAI-compatible servers, models with a chat template);
- ``kind="completion"``: the rendered text is fed as-is and the model continues it
  (base models such as the bundled Gemma 3 270M, which has no chat template).

``stop`` lists strings at which a generation is cut in post-processing (the raw
output is kept in the store). The template *hash* is the sha256 of the template
text together with its kind and stop strings, so editing any of them regenerates
(the store keys every result by it).

Built-in templates (:data:`TEMPLATES`):

``image``
    The reference image prompt (paper): describe the image for ``{category}``.
``preference``
    The reference preference prompt (paper), ``{descriptions}`` = the behaviour list.
``preference-fewshot``
    A completion prompt for base models: one worked example, then the user's list,
    ending where the model should write the preference paragraph.
"""
import hashlib
import json
import os
import string
from dataclasses import dataclass, field
from typing import Dict, Tuple

from mllmrec_pyg.errors import InputError, reading

IMAGE_PROMPT = (
    "Convert the given image into an accurate and concise textual description relevant to "
    "{category}, focusing on key attributes that can influence the buying behaviour of users, "
    "such as colour, material, style, functionality. One paragraph, no more than 100 words."
)

PREFERENCE_PROMPT = (
    "Please reason about the user preferences based on the following list of item descriptions "
    "that he or she has interacted with. The list is: {descriptions}. Generate the user "
    "preferences as one natural-language paragraph in no more than 100 words."
)

# A base model continues text; one short worked example shows it the shape of the answer
# (a single paragraph that ends with a blank line), which the stop strings then cut at.
PREFERENCE_FEWSHOT = (
    "Each list below holds the items a user interacted with. After each list, an analyst "
    "describes the user's preferences in one short paragraph.\n\n"
    "Items:\n"
    "- Heat (1995; Action, Crime, Thriller)\n"
    "- The Usual Suspects (1995; Crime, Thriller)\n"
    "- Toy Story (1995; Animation, Children's, Comedy)\n"
    "- Se7en (1995; Crime, Thriller)\n"
    "Preferences: This user is drawn to tense crime thrillers with clever plots and "
    "morally grey characters, and occasionally enjoys light-hearted animated comedies.\n\n"
    "Items:\n"
    "{descriptions}\n"
    "Preferences: This user"
)


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt template.

    Args:
        name: a short name, recorded with every result.
        text: ``str.format`` text; its fields are filled by the stage that uses it
            (``{descriptions}`` for preferences, ``{category}`` for images).
        kind: ``"chat"`` (the text is a user message) or ``"completion"`` (raw text
            continued by a base model).
        stop: strings at which generated text is cut in post-processing.
        prefix: text prepended to the cleaned generation (a completion template that
            ends mid-sentence, e.g. ``"This user"``, puts those words back).
        item_format: for behaviour lists, the ``str.format`` template of one list entry
            over ``{text}`` (the item description) and ``{index}``.
        joiner: the string between list entries.
    """

    name: str
    text: str
    kind: str = "chat"
    stop: Tuple[str, ...] = ()
    prefix: str = ""
    item_format: str = "{text}"
    joiner: str = "; "
    fields: Tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in ("chat", "completion"):
            raise ValueError(f"template {self.name!r}: kind must be 'chat' or 'completion', got {self.kind!r}")
        try:
            names = tuple(f for _, f, _, _ in string.Formatter().parse(self.text) if f)
        except ValueError as err:
            raise ValueError(f"template {self.name!r}: not a valid str.format text ({err})") from None
        object.__setattr__(self, "fields", names)
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def hash(self) -> str:
        """sha256 (hex) of everything that changes what is generated or kept."""
        payload = json.dumps({"text": self.text, "kind": self.kind, "stop": list(self.stop),
                              "prefix": self.prefix, "item_format": self.item_format,
                              "joiner": self.joiner}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def render(self, **values) -> str:
        """The prompt with its fields filled; a missing field is a ``ValueError``."""
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise ValueError(f"template {self.name!r} needs the fields {missing}")
        return self.text.format(**values)

    def postprocess(self, raw: str) -> str:
        """Cleans a raw generation: cut at the first stop string, drop a trailing
        unfinished sentence when a finished one exists, put ``prefix`` back."""
        text = raw
        for s in self.stop:
            cut = text.find(s)
            if cut >= 0:
                text = text[:cut]
        text = " ".join(text.split())
        if text and text[-1] not in ".!?":
            # max_new_tokens stopped mid-sentence: keep whole sentences only.
            end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
            if end > 0:
                text = text[:end + 1]
        if self.prefix:
            text = (self.prefix + " " + text).strip() if text else self.prefix.strip()
        return text


TEMPLATES: Dict[str, PromptTemplate] = {
    "image": PromptTemplate("image", IMAGE_PROMPT, kind="chat"),
    "preference": PromptTemplate("preference", PREFERENCE_PROMPT, kind="chat"),
    "preference-fewshot": PromptTemplate(
        "preference-fewshot", PREFERENCE_FEWSHOT, kind="completion",
        stop=("\n\n", "\nItems:", "Items:\n"), prefix="This user", item_format="- {text}", joiner="\n"),
}


def get_template(spec) -> PromptTemplate:
    """A template from a built-in name, a YAML/JSON file, or a mapping.

    Args:
        spec: a :class:`PromptTemplate`; a name in :data:`TEMPLATES`; a path to a
            ``.yaml``/``.yml``/``.json`` file or a dict with the fields of
            :class:`PromptTemplate` (``text`` required); or a path to a ``.txt`` file
            holding the text of a chat template.
    """
    if isinstance(spec, PromptTemplate):
        return spec
    if isinstance(spec, dict):
        if "text" not in spec:
            raise ValueError(f"template mapping needs a 'text' field (has {sorted(spec)})")
        known = {"name", "text", "kind", "stop", "prefix", "item_format", "joiner"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"template mapping has unknown fields {sorted(unknown)} (known: {sorted(known)})")
        values = dict(spec)
        values.setdefault("name", "custom")
        values["stop"] = tuple(values.get("stop") or ())
        return PromptTemplate(**values)
    if not isinstance(spec, str):
        raise TypeError(f"template must be a name, a path or a mapping, not {type(spec).__name__}")
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"template {spec!r}: neither a built-in name ({sorted(TEMPLATES)}) nor a file")
    with reading(spec):
        with open(spec, encoding="utf-8") as f:
            content = f.read()
        if spec.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(content)
        elif spec.endswith(".json"):
            data = json.loads(content)
        else:
            return PromptTemplate(os.path.basename(spec), content, kind="chat")
        if not isinstance(data, dict):
            raise InputError(spec, "a template file holds a mapping with a 'text' field")
        data.setdefault("name", os.path.splitext(os.path.basename(spec))[0])
        return get_template(data)


def check_item_template(template: str, columns, what: str = "--item-template") -> None:
    """Checks a ``str.format`` template of one item before any item is rendered.

    Only named fields are allowed (``{title}``, ``{title!r}``, ``{price:>8}``): a
    positional field (``{0}``, ``{}``) has no value to take, and attribute or index
    access (``{title.upper}``, ``{title[0]}``) reaches into a string. Every field must
    be one of ``columns``; the format specs are tried on a sample string.

    Args:
        template: the item template.
        columns: the names it may use (the ``.item`` columns and ``image_description``).
        what: the argument or configuration key it came from, named in the errors.

    Raises:
        InputError: naming ``what``, the field and the columns.
    """
    columns = list(columns)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise InputError(None, f"{what} {template!r}: not a valid str.format text ({err})") from None
    for _, field_name, spec, _ in parsed:
        if field_name is None:
            continue
        head = field_name.split(".")[0].split("[")[0]
        if head == "" or head.isdigit():
            raise InputError(None, f"{what} {template!r}: positional field {{{field_name}}}; name a column "
                                   f"instead, e.g. {{{columns[0] if columns else 'title'}}} (columns: {columns})")
        if head != field_name:
            raise InputError(None, f"{what} {template!r}: field {{{field_name}}} reaches into the value of "
                                   f"{head!r} (attribute or index); use {{{head}}}")
        if head not in columns:
            raise InputError(None, f"{what} {template!r}: field {{{head}}} is not a column (columns: {columns})")
    try:
        template.format(**{c: "text" for c in columns})
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise InputError(None, f"{what} {template!r}: cannot be filled with text values ({err})") from None
