"""Reading a ``POST /v4/file`` body as MetaDefender does: the file's own bytes, streamed.

Clients send the file two ways: as the raw body (``application/octet-stream``, the browser extension,
our engine, ``curl --data-binary``; also ``curl -d``'s form-encoded content type, as in the vendor's
own sample) or as ``multipart/form-data`` (OPSWAT's SDK, ``requests`` ``files=``, ``curl -F``). A
multipart body's file is its first part that carries a filename, else the part named ``file``; other
parts (form fields) are read past. Either way only the file's bytes are hashed, sized and scanned.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from ._metadefender_state import Digester

__all__ = ("BadBody", "Received", "TooLarge", "receive")


class TooLarge(Exception):
    """The file passed the key's ``max_upload_file_size``; reading stopped there."""


class BadBody(Exception):
    """A multipart body that cannot be parsed, or holds no file part."""


@dataclass(frozen=True, slots=True)
class Received:
    digester: Digester
    #: the multipart part's filename (None for a raw body, or a part without one)
    part_filename: str | None


async def receive(request: web.Request, limit: int) -> Received:
    """Stream the uploaded file through a :class:`Digester`, at most ``limit`` bytes.

    Raises TooLarge past ``limit`` (the rest of the body is left unread) and BadBody for a multipart
    body without a file part or with a broken envelope.
    """
    digester = Digester()
    if request.content_type != "multipart/form-data":
        async for chunk in request.content.iter_any():
            _feed(digester, chunk, limit)
        return Received(digester, None)
    try:
        reader = await request.multipart()
        part = await reader.next()
        while part is not None:
            if isinstance(part, BodyPartReader) and (part.filename is not None or part.name == "file"):
                while chunk := await part.read_chunk():
                    _feed(digester, chunk, limit)
                filename = part.filename
                await reader.release()
                return Received(digester, filename)
            await part.release()
            part = await reader.next()
    except (ValueError, AssertionError) as exc:  # aiohttp's multipart reader raises these on bad envelopes
        raise BadBody(f"could not parse the multipart body: {exc}") from None
    raise BadBody("the multipart body holds no file part")


def _feed(digester: Digester, chunk: bytes, limit: int) -> None:
    if digester.size + len(chunk) > limit:
        raise TooLarge
    digester.update(chunk)
