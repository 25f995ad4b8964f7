"""Product name -> Profile, reloaded when a profile file changes.

Why polling (stat mtime + size every `poll_s`): it works the same on every file
system, container bind mount and network share, needs no extra package, and a
profile changes a few times a day. A changed file is loaded, checked against the
encoder and its compiled road built on the watcher thread, off the request path;
then one reference (the name -> entry dict) is replaced. A request that already
took the old dict finishes with the old profile; none waits and none is dropped.
A file that does not load (half-copied, wrong encoder) is reported once and the
previous profile keeps serving.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from ..errors import CaregError, UserInputError
from .protocol import PRODUCT, RequestError

SUFFIX = ".careg"


@dataclass(frozen=True)
class Entry:
    profile: object          # careg_edge.Profile
    path: Path
    stamp: Tuple[int, int]   # (mtime_ns, size) the profile was loaded from


def _stamp(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def product_of(path: Path) -> str:
    name = path.name[:-len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem
    if not PRODUCT.match(name):
        raise UserInputError(f"--profiles {path}: the file name {name!r} is the product name "
                             f"requests use; rename it to 1-64 of A-Z a-z 0-9 _ . -")
    return name


class ProfileRegistry:
    def __init__(self, sources: Iterable, check=None, log=lambda m: None, poll_s: float = 1.0):
        """sources: profile files and/or folders (each folder's *.careg, re-listed on
        every poll so a new product can be added while serving). check(profile):
        raises when a profile does not fit the encoder (Inspector.check)."""
        self.dirs: List[Path] = []
        self.files: List[Path] = []
        for s in sources:
            p = Path(s)
            if p.is_dir():
                self.dirs.append(p)
            elif p.is_file():
                self.files.append(p)
            else:
                raise UserInputError(f"--profiles {p}: no such file or folder")
        self.check, self.log, self.poll_s = check, log, float(poll_s)
        self._entries: Dict[str, Entry] = {}
        self._failed: Dict[Path, Tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.reloads = 0
        for name, path in self._paths().items():  # at start a bad profile is fatal
            self._entries[name] = self._load(name, path, _stamp(path))
        if not self._entries:
            raise UserInputError(f"--profiles {', '.join(map(str, sources))}: no {SUFFIX} "
                                 f"profiles found (make them with `careg-edge enroll`)")

    # ------------------------------------------------------------ request path
    def get(self, product: str):
        """The current Profile of a product (one dict lookup on the current reference)."""
        e = self._entries.get(product)
        if e is None:
            known = ", ".join(sorted(self._entries)) or "none"
            raise RequestError(f"product {product!r}: no such profile (serving: {known})")
        return e.profile

    def names(self) -> List[str]:
        return sorted(self._entries)

    # ------------------------------------------------------------ watcher
    def _paths(self) -> Dict[str, Path]:
        paths: Dict[str, Path] = {}
        for p in self.files + [f for d in self.dirs for f in sorted(d.glob("*" + SUFFIX))]:
            name = product_of(p)
            if name in paths and paths[name] != p:
                raise UserInputError(f"--profiles: {paths[name]} and {p} both name product {name!r}")
            paths[name] = p
        return paths

    def _load(self, name: str, path: Path, stamp) -> Entry:
        from .. import Profile
        from ..scoring import road
        prof = Profile.load(path)
        if self.check is not None:
            self.check(prof)
        road(prof)  # compile now, not on the first request
        return Entry(prof, path, stamp)

    def refresh(self) -> List[str]:
        """Load what changed since the last call; the names that were (re)loaded."""
        try:
            paths = self._paths()
        except UserInputError as e:
            self.log(f"serve: profiles not re-read: {e}")
            return []
        changed = {}
        for name, path in paths.items():
            stamp = _stamp(path)
            old = self._entries.get(name)
            if stamp is None or (old is not None and old.stamp == stamp and old.path == path) \
                    or self._failed.get(path) == stamp:
                continue
            try:
                changed[name] = self._load(name, path, stamp)
                self._failed.pop(path, None)
            except (CaregError, OSError) as e:
                self._failed[path] = stamp
                self.log(f"serve: {path}: not reloaded, still serving the previous profile ({e})")
        if changed:
            self._entries = {**self._entries, **changed}   # the swap: one reference
            self.reloads += len(changed)
            for name in changed:
                self.log(f"serve: loaded {name} (threshold {changed[name].profile.threshold:.6g})")
        return sorted(changed)

    def start(self) -> "ProfileRegistry":
        def watch():
            while not self._stop.wait(self.poll_s):
                try:
                    self.refresh()
                except Exception as e:  # noqa: BLE001 - the watcher never dies silently mid-shift
                    self.log(f"serve: profile watcher: {type(e).__name__}: {e}")
        self._thread = threading.Thread(target=watch, name="careg-profiles", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
