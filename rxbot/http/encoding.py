"""Which text encoding a response body is in, decided the way a browser decides it.

A page whose ``Content-Type`` names no charset is common on the sites databot's users
crawl (GBK pages in China, Shift-JIS in Japan): decoding it as UTF-8 gives mojibake, and
nothing fails. The order here follows the WHATWG encoding sniffing algorithm, shortened:

1. a byte-order mark (UTF-8, UTF-16 LE/BE) — it wins over everything, as in browsers;
2. the ``charset`` of ``Content-Type``, if it names a *text* encoding Python has;
3. JSON (``application/json``, ``+json``) is UTF-8 (RFC 8259);
4. an HTML ``<meta charset>`` / ``<meta http-equiv="Content-Type" content="...;
   charset=...">`` or an XML declaration ``<?xml ... encoding="..."?>`` within the first
   1,024 bytes (the WHATWG prescan bound; a bounded read, whatever the body's size);
5. valid UTF-8 (checked on the first :data:`DETECT_BYTES`) is UTF-8: no guessing needed;
6. detection with charset-normalizer on the first :data:`DETECT_BYTES` bytes;
7. UTF-8.

A charset that is not a text encoding (``base64``, ``hex``, ``rot13``, ``zlib``: Python
codecs that transform bytes, not decode text) or is unknown is treated as absent, so a
hostile or broken header never makes ``.text`` raise.
"""
from __future__ import annotations

import codecs
import re
from functools import lru_cache

#: bytes of body the detection (and the UTF-8 check before it) looks at: enough for
#: any real page's statistics, and a bound on the time a huge body costs
DETECT_BYTES = 64 * 1024
#: bytes the ``<meta>``/XML-declaration prescan looks at (WHATWG's bound)
PRESCAN_BYTES = 1024

#: Python codecs that are text encodings by Python's flag but are not page encodings:
#: decoding a page with them raises or means something else (``idna`` refuses
#: ``errors='replace'``; the escape codecs interpret backslashes; utf-7 is refused by
#: browsers because it hides markup)
NOT_PAGE_ENCODINGS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape",
                                "utf-7", "mbcs", "oem", "charmap"})
#: labels browsers read as a wider encoding than Python's codec of that name (WHATWG
#: maps gb2312 to GBK: pages labelled gb2312 use GBK's extra characters)
SUPERSETS = {"gb2312": "gbk", "ascii": "utf-8"}

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_CHARSET_PARAM = re.compile(r"""charset\s*=\s*["']?\s*([^"';,\s]+)""", re.IGNORECASE)
_META = re.compile(rb"<meta\s[^>]*?charset\s*=\s*[\"']?\s*([-\w.:]+)", re.IGNORECASE)
_XML_DECL = re.compile(rb"^\s*<\?xml\s[^>]*?encoding\s*=\s*[\"']([-\w.:]+)[\"']", re.IGNORECASE)


@lru_cache(maxsize=256)
def text_encoding(label: str | bytes | None) -> str | None:
    """Python's name for the text encoding ``label`` names, or None when it names none
    (unknown, not a text encoding, or not usable for a page)."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "replace")
    label = label.strip().strip("\"'").strip().lower()
    if not label or len(label) > 40:
        return None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    # base64, hex, rot13, zlib, bz2, uu, quopri: codecs, but not text encodings
    if not getattr(info, "_is_text_encoding", True):
        return None
    name = info.name
    if name in NOT_PAGE_ENCODINGS or name.replace("_", "-") in NOT_PAGE_ENCODINGS:
        return None
    return SUPERSETS.get(name, name)


def header_charset(content_type: str | None) -> str | None:
    """The text encoding the ``charset`` parameter of a Content-Type names, if any."""
    if not content_type:
        return None
    match = _CHARSET_PARAM.search(content_type)
    return text_encoding(match.group(1)) if match else None


def bom_encoding(content: bytes) -> str | None:
    for bom, name in _BOMS:
        if content.startswith(bom):
            return name
    return None


def declared_in_body(content: bytes) -> str | None:
    """The encoding a page declares in its first bytes: XML declaration or ``<meta>``."""
    head = content[:PRESCAN_BYTES]
    match = _XML_DECL.match(head) or _META.search(head)
    if match is None:
        return None
    name = text_encoding(match.group(1))
    if name is not None and name.startswith("utf-16"):
        return "utf-8"  # a page that could be read to find this label is not UTF-16 (WHATWG)
    return name


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _valid_utf8(sample: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


def detect(sample: bytes) -> str | None:
    """charset-normalizer's best guess for ``sample``, as a usable text encoding."""
    from charset_normalizer import from_bytes  # imported on first use: most pages say their charset

    try:
        best = from_bytes(sample).best()
    except Exception:  # a detector's own failure must not fail the read: UTF-8 follows
        return None
    return text_encoding(best.encoding) if best is not None else None


def sniff_encoding(content: bytes, content_type: str | None) -> str:
    """The encoding to decode ``content`` with (see the module's docstring for the order)."""
    name = bom_encoding(content) or header_charset(content_type)
    if name is not None:
        return name
    if not content or _is_json(content_type):
        return "utf-8"
    name = declared_in_body(content)
    if name is not None:
        return name
    sample = content[:DETECT_BYTES]
    if sample.isascii() or _valid_utf8(sample):
        return "utf-8"
    return detect(sample) or "utf-8"


def decode(content: bytes, encoding: str | None) -> str:
    """``content`` as text: undecodable bytes replaced, a leading byte-order mark dropped.
    Always a str, whatever ``encoding`` says (a codec that fails falls back to UTF-8)."""
    try:
        text = content.decode(encoding or "utf-8", errors="replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        text = content.decode("utf-8", errors="replace")
    if not isinstance(text, str):  # a codec that returns something else (none known)
        text = content.decode("utf-8", errors="replace")
    return text[1:] if text[:1] == "\ufeff" else text


__all__ = ["sniff_encoding", "text_encoding", "header_charset", "declared_in_body", "decode", "detect",
           "DETECT_BYTES", "PRESCAN_BYTES"]
