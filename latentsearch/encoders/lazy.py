"""The encoder a collection is pinned to, loaded once, on first need, by whichever thread asks."""

from __future__ import annotations

import threading

from ..errors import EncoderMismatchError
from .base import Encoder

NO_ENCODER = "none"


class LazyEncoder:
    """The collection's encoder by its pinned ``spec`` and ``fingerprint``; the model loads on
    the first :meth:`get` (never for a collection of precomputed vectors, nor for work that
    needs no model), and only one thread loads it. A spec that runs the model's own code
    (``trust_remote_code``) loads only when ``trust_remote_code`` (the user's decision) is true."""

    def __init__(
        self,
        spec: str,
        fingerprint: str,
        encoder: Encoder | None = None,
        trust_remote_code: bool = False,
        where: object = "its path",
    ):
        self.spec, self.fingerprint = spec, fingerprint
        self.trust_remote_code, self.where = trust_remote_code, where  # where: the collection, for messages
        self._encoder = encoder
        self._lock = threading.Lock()

    @property
    def present(self) -> bool:
        """Whether the collection has an encoder at all (False: vectors only)."""
        return self.spec != NO_ENCODER

    @property
    def loaded(self) -> Encoder | None:
        """The encoder if it is loaded already; never loads it."""
        return self._encoder

    def use(self, encoder: Encoder) -> None:
        """Use this loaded encoder (one that gives the pinned encoder's vectors, e.g. wrapped)."""
        with self._lock:
            self._encoder = encoder

    def get(self, allow_changed: bool = False) -> Encoder | None:
        """The encoder (None for a collection of vectors only), loaded on first call.

        An encoder whose weights or preprocessing changed since the collection was built is
        refused unless ``allow_changed`` (re-embedding needs it)."""
        with self._lock:
            if self._encoder is None and self.present:
                from . import check_remote_code, create_encoder

                check_remote_code(self.spec, self.trust_remote_code, self.where)
                encoder = create_encoder(self.spec)
                if not allow_changed and self._changed(encoder):
                    raise EncoderMismatchError(
                        f"the encoder {self.spec!r} now gives different vectors than when this collection "
                        "was built (its weights or preprocessing changed); re-embed it with "
                        "`latentsearch index` (it does so first) or Collection.reembed()"
                    )
                self._encoder = encoder
            return self._encoder

    def changed(self) -> bool:
        """Whether the encoder now gives other vectors than when the collection was built
        (loads it when needed)."""
        if not self.present or not self.fingerprint:
            return False
        with self._lock:
            if self._encoder is None:
                from . import check_remote_code, create_encoder

                check_remote_code(self.spec, self.trust_remote_code, self.where)
                self._encoder = create_encoder(self.spec)
            return self._changed(self._encoder)

    def _changed(self, encoder: Encoder) -> bool:
        return bool(self.fingerprint) and encoder.fingerprint() != self.fingerprint

    def repinned(self, fingerprint: str) -> None:
        """The collection now holds this encoder's vectors (after re-embedding)."""
        self.fingerprint = fingerprint
