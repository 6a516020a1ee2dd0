"""Generated declaration documents as bytes: the samples, mutated (wrong types, huge numbers, deep nesting,
Unicode controls and lone surrogates, NaN/Infinity and other non-JSON number text, duplicate keys), written
in odd encodings (BOMs, UTF-16/32, cp1251, CESU-like surrogates), then sometimes damaged byte by byte; and
plain random bytes."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.helpers import SAMPLES

SAMPLE_DOCUMENTS = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(SAMPLES.glob("[0-9]*.json"))}


@dataclass(frozen=True)
class Raw:
    """A token written as is: ``NaN``, ``1e999``, ``[[[...]]]``, or text that is not JSON at all."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """An object written with these (key, value) pairs in order, duplicates included."""

    items: tuple[tuple[str, Any], ...]


TRICKY_STRINGS = [
    "",
    " ",
    "\x00",
    "5\x0001",
    "\ud800",  # lone surrogates: JSON can escape them (\ud800), UTF-8 cannot encode them
    "\udfff",
    "a\udc80b",
    "\ud83d\ude00",  # a pair written as two escapes: one character
    "\u202e",  # right-to-left override
    "\u2028\u2029",
    "\ufeff",
    "\u0085",
    "\r\n=== РЕШЕНИЕ: ВЫПУСК ===\r\n",
    "\x1b[31m",
    "../../etc/passwd",
    "Ә Ғ Қ Ң Ө Ұ Ү Һ І",
    "1e5",
    "1,5",
    "-0",
    "0.0000001",
    "99999999999999999999.99",
    "NaN",
    "Infinity",
    "050840001233",
    "050840001234",
    "50101",
    "KZ",
    "KZT",
    "2026-02-30",
    "2026-11-02T10:00:00Z",
    "x" * 5000,
    "{value} {problem}",
    "%s%n",
]

RAW_TOKENS = [
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e308",
    "4.9e-324",
    "1e-400",
    "-0",
    "-0.0",
    "123456789012345678",  # 18 digits: the most an integer may have
    "1234567890123456789",  # 19
    "-123456789012345678",
    "1" * 400 + ".5",
    "1" * 5000,  # past Python's own int-from-text limit (4300 digits)
    "1.7976931348623157e309",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
    "1_000",
    "tru",
    "nul",
    "None",
    "'single'",
    '"unterminated',
    "[1,]",
    '{"a":1,}',
    "[",
    "}",
    '"\\x41"',
    '"\\u12"',
    '"\\ud800"',
    '"\\udc00\\ud800"',
    '"\\u0000"',
    '"tab\there"',
    "/* comment */ 1",
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**25), max_value=10**25),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),  # surrogates and controls included
    st.sampled_from(TRICKY_STRINGS),
    st.sampled_from(RAW_TOKENS).map(Raw),
)


# values a declaration could well carry, in the wrong place or with the wrong sum: they take documents past
# format control to the rules across fields (totals, net against gross, offices and zones, item numbers)
plausible_values = st.one_of(
    st.from_regex(r"-?\d{1,18}(\.\d{1,6})?", fullmatch=True),
    st.decimals(min_value=0, max_value=10**9, places=2).map(str),
    st.integers(-2, 1000),
    st.sampled_from(["50101", "62101", "39851", "55201", "99999", "ALA-TSW", "ALA-AIR", "NQZ-TSW", "KHR-ROAD", "XX-NONE"]),
    st.sampled_from(["IM", "EK", "40", "10", "796", "166", "04021", "5010", "KZ", "CN", "KZT", "USD", "ru", "kk", "en"]),
    st.dates().map(str),
)


def _deep(depth: int, kind: str) -> Raw:
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    if kind == "dict":
        return Raw('{"a":' * depth + "1" + "}" * depth)
    return Raw("[" * depth)  # never closed


json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
) | st.builds(
    _deep,
    st.one_of(st.integers(1, 40), st.sampled_from([31, 32, 33, 1000, 5000, 200_000])),
    st.sampled_from(["list", "dict", "open"]),
)


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into the document (the root is ``()``)."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _places(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _places(child, (*path, index))
    return found


def _get(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value


ACTIONS = ("replace", "replace", "replace", "plausible", "plausible", "delete", "add", "duplicate", "wrap")


@st.composite
def mutated_documents(draw, actions: tuple[str, ...] = ACTIONS) -> Any:
    """A sample document with a few mutations: a value replaced, a key removed or added, a key repeated."""
    document = copy.deepcopy(draw(st.sampled_from(list(SAMPLE_DOCUMENTS.values()))))
    for _ in range(draw(st.integers(0, 4))):
        places = _places(document)
        path = draw(st.sampled_from(places))
        action = draw(st.sampled_from(actions))
        if path == ():
            if action == "replace" and draw(st.integers(0, 9)) == 0:
                document = draw(json_values)  # not even an object
            continue
        parent, key = _get(document, path[:-1]), path[-1]
        if not isinstance(parent, (dict, list)):
            continue
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "plausible":
            parent[key] = draw(plausible_values)
        elif action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(st.text(max_size=12), st.sampled_from(TRICKY_STRINGS)))] = draw(json_values)
        elif action == "add":
            parent.insert(draw(st.integers(0, len(parent))), draw(json_values))
        elif action == "duplicate" and isinstance(parent, dict):
            parent[key] = Pairs(((key, parent[key]),))  # marks: write this key twice in its object
        elif action == "wrap":
            parent[key] = [parent[key]] if draw(st.booleans()) else {"value": parent[key]}
    return document


def dumps(value: Any, *, ensure_ascii: bool, indent: int | None) -> str:
    """JSON text of ``value`` with its Raw tokens and repeated keys (Pairs in an object) as they are."""
    comma = ",\n" + " " * indent if indent else ", "

    def write(item: Any, level: int) -> str:
        if isinstance(item, Raw):
            return item.text
        if isinstance(item, Pairs):  # a repeated key moved out of its object by a later mutation: once
            return write(item.items[0][1], level)
        if isinstance(item, dict):
            parts = []
            for key, child in item.items():
                text_key = json.dumps(str(key), ensure_ascii=ensure_ascii)
                if isinstance(child, Pairs):
                    for _, repeated in child.items:
                        parts.append(f"{text_key}: {write(repeated, level + 1)}")
                        parts.append(f"{text_key}: {write(repeated, level + 1)}")
                else:
                    parts.append(f"{text_key}: {write(child, level + 1)}")
            return "{" + comma.join(parts) + "}"
        if isinstance(item, list):
            return "[" + comma.join(write(child, level + 1) for child in item) + "]"
        return json.dumps(item, ensure_ascii=ensure_ascii, allow_nan=True)

    return write(value, 0)


ENCODINGS = [
    *["utf-8"] * 10,
    "utf-8-sig",  # one BOM: allowed
    "bom-twice",
    "utf-16",  # with its BOM
    "utf-16-le",
    "utf-32",
    "cp1251",
    "latin-1",
    "surrogatepass",  # lone surrogates written as UTF-8 would (CESU-like): not UTF-8
]


def encode(text: str, encoding: str) -> bytes:
    if encoding == "bom-twice":
        return b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode("utf-8", "surrogatepass")
    if encoding == "surrogatepass":
        return text.encode("utf-8", "surrogatepass")
    if encoding in ("cp1251", "latin-1"):
        return text.encode(encoding, "replace")
    return text.encode(encoding, "surrogatepass")


@st.composite
def damaged(draw, content: bytes) -> bytes:
    """Byte-level damage: a cut, bytes spliced in, one flipped, a NUL."""
    action = draw(st.sampled_from(["cut", "splice", "flip", "nul", "prefix"]))
    at = draw(st.integers(0, len(content)))
    if action == "cut":
        return content[:at]
    if action == "splice":
        return content[:at] + draw(st.binary(min_size=1, max_size=8)) + content[at:]
    if action == "flip" and content:
        at = min(at, len(content) - 1)
        return content[:at] + bytes([content[at] ^ draw(st.integers(1, 255))]) + content[at + 1 :]
    if action == "nul":
        return content[:at] + b"\x00" + content[at:]
    return draw(st.sampled_from([b" \t\r\n", b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe", b"\x00"])) + content


@st.composite
def plausible_document_bytes(draw) -> bytes:
    """UTF-8 samples with plausible values changed or fields removed: most pass intake, many pass format control."""
    document = draw(mutated_documents(actions=("plausible", "plausible", "plausible", "delete")))
    return dumps(document, ensure_ascii=draw(st.booleans()), indent=1).encode("utf-8")


@st.composite
def document_bytes(draw) -> bytes:
    """Declaration bytes: mostly mutated samples, some written oddly or damaged; some plain random bytes."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=200))
    document = draw(mutated_documents())
    text = dumps(document, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1, 2])))
    content = encode(text, draw(st.sampled_from(ENCODINGS)))
    if draw(st.integers(0, 7)) == 0:
        content = draw(damaged(content))
    return content
