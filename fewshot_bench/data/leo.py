"""LEO embedding files: a restricted unpickler, exact parsing and validation, and writers.

The LEO authors publish each split as a Python-2 pickle (protocol 2) of a dict
``{"embeddings": float32 [n, 640], "labels": int64 [n], "keys": [n]}``; a key reads
``<number>-<class>-<image file>`` and the image file starts with ``<class>_``. The same
three arrays may also be stored in a ``.npz`` (no pickle at all), which is what
:func:`write_embeddings` recommends for new exports.

Unpickling runs code chosen by whoever wrote the file, so :func:`restricted_load` never
lets pickle import anything: numpy arrays, dtypes and scalars are rebuilt by small stubs
defined here from their raw bytes (``np.frombuffer`` on validated dtypes), ``bytes`` come
from a latin-1-only encoder, and every other global is refused before it is touched.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from fewshot_bench.atomic import replacing
from fewshot_bench.data.files import open_regular
from fewshot_bench.errors import DataError

LEO_FEATURE_DIM = 640
SUFFIXES = (".npz", ".pkl")  # the loader prefers .npz when both exist
FIELDS = ("embeddings", "labels", "keys")
# Python 2's BINSTRING length is a signed 32-bit int: larger arrays need the .npz variant.
MAX_PICKLE_STRING = 2**31 - 1
_CHUNK_ROWS = 1 << 16  # rows per chunk when scanning large arrays (bounds temporary memory)
_RAW_BYTES_MIN = 1 << 16  # BINSTRINGs from this size on are array payloads, kept as raw bytes
# An embeddings file is a dict of arrays (or lists of key strings): containers nest at most this deep.
_MAX_NESTING = 3
# Tuples in an embeddings pickle are numpy's reconstruction arguments and states, at most 2 deep.
_MAX_TUPLE_DEPTH = 8


class UnsafePickleError(DataError):
    """A pickle asked for something an embeddings file never needs; nothing in it was run."""


# --- the restricted unpickler ------------------------------------------------------------


class _NdarrayMarker:
    """Stands in for ``numpy.ndarray`` as the first argument of ``_reconstruct``."""


_NDARRAY = _NdarrayMarker()
_TYPESTR = re.compile(r"^([fiubSUO])(\d*)$")
_KINDS_WITH_SIZE = {"f": (2, 4, 8), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "b": (1,)}


def _text(value: Any, what: str) -> str:
    """A str from a pickled py2 str (latin-1 str under Python 3) or bytes."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, str):
        return value
    raise UnsafePickleError(f"{what} is a {type(value).__name__}, not a string")


class _DtypeStub:
    """Records ``numpy.dtype(typestr, align, copy)`` and its pickled state; builds a safe dtype."""

    def __init__(self, typestr: Any = None, align: Any = 0, copy: Any = 1) -> None:
        self.typestr = _text(typestr, "a dtype name")
        self.state: tuple | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple):
            raise UnsafePickleError("a dtype's state is not a tuple")
        self.state = state

    def build(self) -> np.dtype:
        """The numpy dtype this stub describes, if it is a plain number, string or object type."""
        m = _TYPESTR.match(self.typestr)
        if not m:
            raise UnsafePickleError(f"dtype {self.typestr!r} is not a plain numeric or string type")
        kind, size = m.group(1), int(m.group(2) or 0)
        order, elsize = "|", -1
        if self.state is not None:
            if len(self.state) < 8 or any(v is not None for v in self.state[2:5]):
                raise UnsafePickleError(f"dtype {self.typestr!r} has sub-arrays or fields, which embeddings never have")
            order, elsize = _text(self.state[1], "a dtype byte order"), self.state[5]
            if order not in "<>|=" or len(order) != 1 or not isinstance(elsize, int):
                raise UnsafePickleError(f"dtype {self.typestr!r} has an invalid state")
        order = "" if order in "|=" else order
        if kind == "O":
            return np.dtype(object)
        if kind in _KINDS_WITH_SIZE:
            if size not in _KINDS_WITH_SIZE[kind]:
                raise UnsafePickleError(f"dtype {self.typestr!r} has an unsupported size")
            return np.dtype(f"{order}{kind}{size}")
        # Flexible strings: the state's elsize is authoritative (bytes; 4 per character for U).
        nbytes = elsize if elsize > 0 else size * (4 if kind == "U" else 1)
        if nbytes <= 0 or nbytes > 1 << 16 or (kind == "U" and nbytes % 4):
            raise UnsafePickleError(f"dtype {self.typestr!r} has an invalid item size {nbytes}")
        return np.dtype(f"{order}S{nbytes}" if kind == "S" else f"{order}U{nbytes // 4}")


class _ArrayStub:
    """Records ``_reconstruct(ndarray, ...)`` plus the BUILD state; materialised after loading."""

    def __init__(self, cls: Any = None, shape: Any = None, typecode: Any = None) -> None:
        if cls is not _NDARRAY:
            raise UnsafePickleError("_reconstruct was asked to build something other than a numpy array")
        self.state: tuple | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise UnsafePickleError("an array's state is not the tuple numpy writes")
        self.state = state[1:] if len(state) == 5 else state

    def build(self) -> np.ndarray:
        """The array, rebuilt from raw bytes (or a list of plain strings for object arrays)."""
        if self.state is None:
            raise UnsafePickleError("an array has no data")
        shape, dtype, fortran, data = self.state
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise UnsafePickleError(f"an array has an invalid shape {shape!r}")
        if not isinstance(dtype, _DtypeStub):
            raise UnsafePickleError("an array's dtype is not a numpy dtype")
        dt = dtype.build()
        count = math.prod(shape)
        order = "F" if fortran else "C"
        if dt.hasobject:
            if not isinstance(data, list) or len(data) != count:
                raise UnsafePickleError("an object array's data is not a list of its elements")
            if not all(isinstance(v, (str, bytes, int, float)) for v in data):
                raise UnsafePickleError("an object array holds something other than strings and numbers")
            out = np.empty(count, dtype=object)
            out[:] = data
            return out.reshape(shape, order=order)
        if isinstance(data, str):  # a small py2 str, decoded as latin-1 by the unpickler
            data = data.encode("latin1")
        if not isinstance(data, (bytes, bytearray)):  # a _RawBytes is a bytearray: used without a copy
            raise UnsafePickleError("an array's data is not a byte string")
        if len(data) != count * dt.itemsize:
            raise UnsafePickleError(
                f"an array of shape {shape} and dtype {dt} needs {count * dt.itemsize} bytes of data, "
                f"the file holds {len(data)}"
            )
        return np.frombuffer(data, dtype=dt).reshape(shape, order=order)


def _scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy scalar (``numpy.core.multiarray.scalar``) of a plain numeric or string dtype."""
    if not isinstance(dtype, _DtypeStub):
        raise UnsafePickleError("a numpy scalar's dtype is not a numpy dtype")
    dt = dtype.build()
    if dt.hasobject:
        raise UnsafePickleError("object scalars are not allowed")
    raw = data.encode("latin1") if isinstance(data, str) else data
    if not isinstance(raw, bytes) or len(raw) != dt.itemsize:
        raise UnsafePickleError("a numpy scalar has data of the wrong size")
    return np.frombuffer(raw, dtype=dt)[0]


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 writes bytes at protocol 2, restricted to latin-1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode was called with encoding {encoding!r}; only latin-1 is allowed")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeStub,
    ("_codecs", "encode"): _latin1_encode,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _ArrayStub
    _ALLOWED[(_module, "scalar")] = _scalar


class _RawBytes(bytearray):
    """A large Python-2 byte string (BINSTRING) kept as raw bytes instead of a latin-1 ``str``.

    Decoding a 1 GB array payload to ``str`` and encoding it back would hold the file's
    bytes, the ``str`` and the array at once; latin-1 maps bytes to code points one to one,
    so keeping the bytes loses nothing. Only :class:`_ArrayStub` and :func:`_text` accept it.
    """


class _BoundedFile:
    """A pickle file whose reads may not ask for more bytes than are left in it.

    A pickle's header can claim any length (a 2 GiB string in an 11-byte file); reading
    ``n`` bytes allocates ``n`` before finding out they are not there. Every read is
    checked against the bytes left on disk first, so no file can make the loader allocate
    more than its own size.
    """

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._f, self._left = file, size

    def _claim(self, n: int) -> int:
        if n is None or n < 0:
            return self._left
        if n > self._left:
            raise pickle.UnpicklingError(
                f"it declares {n:,} bytes of data where only {self._left:,} bytes are left in the file "
                "(truncated, or crafted to exhaust memory)"
            )
        return n

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(self._claim(n))
        self._left -= len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self._f.readline(self._left if limit is None or limit < 0 else min(limit, self._left))
        self._left -= len(data)
        return data

    def readinto(self, buf: Any) -> int:
        self._claim(len(buf))
        n = self._f.readinto(buf) or 0
        self._left -= n
        return n


class _RestrictedUnpickler(pickle._Unpickler):
    """Resolves only the globals in ``_ALLOWED``, each to a local stub; refuses everything else.

    The pure-Python unpickler is used because its opcode table can be extended: large
    BINSTRINGs (array payloads) are read straight into a buffer (:class:`_RawBytes`), so an
    embeddings file needs about one copy of its arrays in memory, not three.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._file = file
        self._deep: dict[int, tuple[tuple, int]] = {}  # id -> (tuple, depth) of the tuples holding tuples

    def _load_binstring(self) -> None:
        (size,) = struct.unpack("<i", self.read(4))
        if size < 0:
            raise pickle.UnpicklingError("BINSTRING pickle has negative byte count")
        if size < _RAW_BYTES_MIN:
            data = self.read(size)
            if len(data) != size:
                raise pickle.UnpicklingError("pickle data was truncated")
            self.append(self._decode_string(data))
            return
        self.append(self._read_raw(size))

    def _read_raw(self, size: int) -> _RawBytes:
        """``size`` bytes straight from the file into one buffer (no intermediate ``bytes``)."""
        if isinstance(self._file, _BoundedFile):
            self._file._claim(size)  # before allocating: the header may lie about the size
        data = _RawBytes(size)
        if self._unframer.current_frame is not None:  # protocol 4 frames (never in py2 files)
            chunk = self.read(size)
            data[: len(chunk)] = chunk
            got = len(chunk)
        else:
            view, got = memoryview(data), 0
            while got < size:
                n = self._file.readinto(view[got:])
                if not n:
                    break
                got += n
        if got != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        return data

    dispatch[pickle.BINSTRING[0]] = _load_binstring

    def _tuple(self, items: list) -> tuple:
        """``tuple(items)``, refused when it would nest tuples deeper than an embeddings file does.

        A tuple's hash, computed when it becomes a dict key, recurses through its nested
        tuples in C without a depth check: a few hundred kilobytes of ``TUPLE1`` opcodes
        crash the interpreter (SIGSEGV). Tuples are immutable, so each one's depth is known
        when it is built, from those of its items.
        """
        depth = 1 + max((self._depth(v) for v in items), default=0)
        if depth > _MAX_TUPLE_DEPTH:
            raise UnsafePickleError(
                f"it nests tuples more than {_MAX_TUPLE_DEPTH} deep, which an embeddings file never does "
                "(refused before building them; the file may be malicious)"
            )
        out = tuple(items)
        # Kept with the tuple, alive, so its id stays its own: a few per array in a real file, and
        # never more than the file's size allows (each costs opcodes). Depth 1 is the default.
        if depth > 1:
            self._deep[id(out)] = (out, depth)
        return out

    def _depth(self, value: Any) -> int:
        """How deep ``value`` nests tuples: 0 for anything else, 1 for a tuple of no tuples."""
        if type(value) is not tuple:
            return 0
        entry = self._deep.get(id(value))
        return 1 if entry is None else entry[1]

    def _load_tuple(self) -> None:
        items = self.pop_mark()  # first: it replaces self.append
        self.append(self._tuple(items))

    def _load_tuple_n(self, n: int) -> None:
        if len(self.stack) < n:
            raise pickle.UnpicklingError("unpickling stack underflow")
        self.stack[-n:] = [self._tuple(self.stack[-n:])]

    dispatch[pickle.TUPLE[0]] = _load_tuple
    for _n, _opcode in enumerate((pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3), start=1):
        dispatch[_opcode[0]] = partial(_load_tuple_n, n=_n)  # called as dispatch[op](self)

    def find_class(self, module: str, name: str) -> Any:
        """Refuse any global that is not part of the embeddings format."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"it asks for {module}.{name}, which an embeddings file never needs "
                "(refused without running it; the file may be malicious)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids are not part of the format."""
        raise UnsafePickleError("it uses persistent ids, which an embeddings file never needs")


def _materialise(obj: Any, depth: int = 0, done: dict[int, Any] | None = None) -> Any:
    """Replace array/dtype stubs by real numpy objects throughout dicts, lists and tuples.

    Each object is materialised once, however often the pickle refers to it (a few hundred
    bytes of shared references would otherwise expand to billions of copies), and
    containers may nest only as deep as an embeddings file's do.
    """
    done = {} if done is None else done
    if id(obj) in done:
        return done[id(obj)]
    if depth > _MAX_NESTING:
        raise UnsafePickleError("it nests containers deeper than an embeddings file does")
    if isinstance(obj, (_ArrayStub, _DtypeStub)):
        out: Any = obj.build()
    elif isinstance(obj, _NdarrayMarker):
        raise UnsafePickleError("it holds a bare numpy.ndarray type")
    elif isinstance(obj, dict):
        out = {k: _materialise(v, depth + 1, done) for k, v in obj.items()}
    elif isinstance(obj, list):
        out = [_materialise(v, depth + 1, done) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(_materialise(v, depth + 1, done) for v in obj)
    else:
        return obj
    done[id(obj)] = out
    return out


def restricted_load(path: Path) -> Any:
    """Unpickle ``path`` (Python 2 ``latin1`` semantics) admitting only the embeddings format.

    Raises :class:`UnsafePickleError` for any global outside numpy array reconstruction,
    and :class:`DataError` for a file that is not a complete pickle.
    """
    path = Path(path)
    try:
        with open_regular(path) as f:
            bounded = _BoundedFile(f, os.fstat(f.fileno()).st_size)
            obj = _RestrictedUnpickler(bounded, encoding="latin1").load()
            trailing = f.read(1)
        obj = _materialise(obj)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"refusing to load {path}: {exc}") from None
    except DataError:  # open_regular's: the path is not a regular file, or cannot be opened
        raise
    except MemoryError:
        raise DataError(f"cannot read {path}: not enough memory to hold what it contains") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # any unpickling failure means a damaged or foreign file
        raise DataError(
            f"{path} is not a readable embeddings pickle ({type(exc).__name__}: {exc}); "
            "it may be truncated: download or export it again"
        ) from None
    if trailing:
        raise DataError(f"{path} has data after the end of its pickle; it is not an embeddings file")
    return obj


# --- parsing and validation --------------------------------------------------------------


@dataclass
class Embeddings:
    """One validated split file, rows in file order, classes taken from the keys."""

    path: Path
    embeddings: np.ndarray  # [n, D] float32
    labels: np.ndarray | None  # [n] int64, when the file has them
    keys: list[str]  # decoded keys (bytes keys are decoded as UTF-8)
    key_type: str  # "str" or "bytes", as stored in the file
    row_class: np.ndarray  # [n] int64 index into class_names
    class_names: list[str]  # sorted

    @property
    def rows(self) -> int:
        """Number of rows n."""
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self.embeddings.shape[1])

    @property
    def counts(self) -> np.ndarray:
        """Rows per class, [C] in class_names order."""
        return np.bincount(self.row_class, minlength=len(self.class_names))


def parse_key(key: str, numeric_prefix: bool = True) -> tuple[str, str, str]:
    """Split ``<number>-<class>-<image file>`` into its three fields, or raise ValueError.

    The image file must start with ``<class>_``. With ``numeric_prefix=False`` the first
    field may be any non-empty text without ``-`` (used by the ``features`` dataset).
    """
    parts = key.split("-", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError("it is not <number>-<class>-<image file>")
    prefix, cls, image = parts
    if numeric_prefix and not prefix.isdigit():
        raise ValueError(f"its first field {prefix!r} is not a number")
    if not image.startswith(cls + "_"):
        raise ValueError(f"its image file {image!r} does not start with its class {cls!r} and '_'")
    return prefix, cls, image


def _decode_keys(raw: Any, path: Path) -> tuple[list[str], str]:
    """Keys as a list of str, and whether the file stored them as str or bytes."""
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1:
            raise DataError(f"{path}: 'keys' has shape {raw.shape}; expected one key per row, shape [n]")
        if raw.dtype.kind not in "SUO":
            raise DataError(f"{path}: 'keys' has dtype {raw.dtype}; expected strings")
        values = raw.tolist()
    elif isinstance(raw, (list, tuple)):
        values = list(raw)
    else:
        raise DataError(f"{path}: 'keys' is a {type(raw).__name__}; expected an array or list of strings")
    if not values:
        return [], "str"
    kind = type(values[0])
    if kind not in (str, bytes):
        raise DataError(f"{path}: row 0: key {values[0]!r} is not a string")
    out: list[str] = []
    for i, v in enumerate(values):
        if type(v) is not kind:
            raise DataError(f"{path}: row {i}: key {v!r} is a {type(v).__name__} but row 0's is a {kind.__name__}")
        if kind is bytes:
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}: row {i}: key {v!r} is not valid UTF-8") from None
        out.append(v)
    return out, kind.__name__


def _first_bad_row(x: np.ndarray) -> int | None:
    """Index of the first row holding NaN or inf, scanning in chunks (bounded memory)."""
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        ok = np.isfinite(x[start : start + _CHUNK_ROWS]).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def validate(
    path: Path,
    embeddings: Any,
    labels: Any,
    keys: Any,
    *,
    dim: int | None = None,
    numeric_prefix: bool = True,
) -> Embeddings:
    """Check the three arrays of one split exactly; errors name the file and the first bad row."""
    path = Path(path)
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        shape = getattr(embeddings, "shape", type(embeddings).__name__)
        raise DataError(f"{path}: 'embeddings' is {shape}; expected a 2-d float32 array [n, D]")
    if embeddings.dtype != np.float32:
        raise DataError(
            f"{path}: 'embeddings' has dtype {embeddings.dtype}; expected float32 "
            "(fewshot_bench.data.leo.write_embeddings converts)"
        )
    n, d = embeddings.shape
    if n == 0 or d == 0:
        raise DataError(f"{path}: 'embeddings' is empty, shape {embeddings.shape}")
    if dim is not None and d != dim:
        raise DataError(f"{path}: embeddings have dimension {d}; this dataset's files have {dim}")
    key_list, key_type = _decode_keys(keys, path)
    if len(key_list) != n:
        raise DataError(f"{path}: {len(key_list)} keys for {n} embedding rows; expected one key per row")
    if labels is not None:
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
            what = f"{labels.shape} {labels.dtype}" if isinstance(labels, np.ndarray) else type(labels).__name__
            raise DataError(f"{path}: 'labels' is {what}; expected int64 [n]")
        if labels.shape[0] != n:
            raise DataError(f"{path}: {labels.shape[0]} labels for {n} embedding rows; expected one label per row")
        labels = labels.astype(np.int64, copy=False)

    row_names: list[str] = []
    seen: dict[str, int] = {}
    for i, key in enumerate(key_list):
        try:
            _, cls, _ = parse_key(key, numeric_prefix)
        except ValueError as exc:
            raise DataError(f"{path}: row {i}: key {key!r} does not parse: {exc}") from None
        first = seen.setdefault(key, i)
        if first != i:
            raise DataError(f"{path}: row {i}: key {key!r} duplicates row {first}")
        row_names.append(cls)
    class_names = sorted(set(row_names))
    index = {c: j for j, c in enumerate(class_names)}
    row_class = np.fromiter((index[c] for c in row_names), dtype=np.int64, count=n)

    if labels is not None:
        # Labels and key classes must be the same partition: one class per label and vice versa.
        label_of_class: dict[int, int] = {}
        class_of_label: dict[int, int] = {}
        for i, (lab, c) in enumerate(zip(labels.tolist(), row_class.tolist())):
            if label_of_class.setdefault(c, lab) != lab or class_of_label.setdefault(lab, c) != c:
                raise DataError(
                    f"{path}: row {i}: label {lab} disagrees with the class {row_names[i]!r} of key "
                    f"{key_list[i]!r} (labels must map one-to-one to key classes)"
                )
    bad = _first_bad_row(embeddings)
    if bad is not None:
        raise DataError(f"{path}: row {bad} (key {key_list[bad]!r}) holds NaN or inf")
    return Embeddings(path, embeddings, labels, key_list, key_type, row_class, class_names)


# How far a member of a .npz can expand when read: not at all when stored, 1032x at most when deflated
# (numpy.savez stores, savez_compressed deflates).
_NPZ_EXPANSION = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_READ_CHUNK = 1 << 24  # bytes per read of a member (bounds temporary memory)


def _npy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, archive_size: int) -> np.ndarray:
    """One ``.npy`` member of a ``.npz``, its declared shape checked against the bytes it holds before allocating.

    numpy's reader allocates what the header declares (a 474-byte file can ask for 2 PiB);
    here the declared size must equal the member's data, and the member's size what its
    compressed bytes in the file can expand to.
    """
    name = info.filename
    expansion = _NPZ_EXPANSION.get(info.compress_type)
    if expansion is None:
        raise DataError(f"{path}: member {name} is compressed with zip method {info.compress_type}; "
                        "numpy.savez and savez_compressed write stored or deflated members: export it again")
    if info.compress_size > archive_size or info.file_size > info.compress_size * expansion:
        raise DataError(f"{path}: member {name} claims {info.file_size:,} bytes from {info.compress_size:,} "
                        f"compressed bytes in a file of {archive_size:,}; it is damaged or crafted: export it again")
    with z.open(info) as member:
        read_header = _NPY_HEADERS.get(np.lib.format.read_magic(member))
        if read_header is None:
            raise DataError(f"{path}: member {name} is not a .npy array of format 1.0 or 2.0; export it again")
        shape, fortran, dtype = read_header(member)
        if dtype.hasobject:
            raise DataError(f"{path}: member {name} holds Python objects (pickled data), which are never loaded; "
                            "write the file with fewshot_bench.data.leo.write_embeddings")
        count = math.prod(shape)
        declared, held = count * dtype.itemsize, info.file_size - member.tell()
        if declared != held:
            raise DataError(f"{path}: member {name} declares shape {shape} of {dtype} ({declared:,} bytes) but holds "
                            f"{held:,} bytes of data; it is damaged or crafted: export it again")
        out = np.empty(count, dtype=dtype)
        got = 0
        view = memoryview(out.view(np.uint8) if declared else b"")
        while got < declared:
            n = member.readinto(view[got : got + _READ_CHUNK])
            if not n:
                raise DataError(f"{path}: member {name} is truncated; export it again")
            got += n
    return out.reshape(shape, order="F" if fortran else "C")


def _load_npz(path: Path) -> dict[str, Any]:
    """The arrays of a ``.npz`` (never unpickling anything, never allocating more than the file holds)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            z = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DataError(
                f"{path} is not a valid .npz file: it is not a zip archive ({exc}); export it again"
            ) from None
        try:
            with z:
                members = z.infolist()
                odd = [m.filename for m in members if not m.filename.endswith(".npy")]
                if odd:
                    raise DataError(f"{path}: member {odd[0]} is not a .npy array; an embeddings .npz holds "
                                    f"{', '.join(f + '.npy' for f in FIELDS)}")
                return {m.filename.removesuffix(".npy"): _npy_member(z, m, path, size) for m in members}
        except MemoryError:
            raise DataError(f"cannot read {path}: not enough memory to hold what it contains") from None
        except (ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError,
                NotImplementedError) as exc:
            raise DataError(f"{path} is not a readable .npz of plain arrays ({exc}); export it again") from None


def read_embeddings(path: Path, *, dim: int | None = None, numeric_prefix: bool = True) -> Embeddings:
    """Read and validate one split file (``.pkl`` through the restricted unpickler, or ``.npz``)."""
    path = Path(path)
    if path.suffix == ".npz":
        obj: Any = _load_npz(path)
    elif path.suffix == ".pkl":
        obj = restricted_load(path)
    else:
        raise DataError(f"{path}: unknown embeddings format {path.suffix!r}; expected .pkl or .npz")
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}; expected a dict with {', '.join(FIELDS)}")
    names = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [f for f in ("embeddings", "keys") if f not in names]
    extra = sorted(str(k) for k in names if k not in FIELDS)
    if missing or extra:
        problems = ([f"lacks {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"has unexpected {', '.join(map(repr, extra))}"] if extra else []
        )
        raise DataError(f"{path} {'; '.join(problems)}; expected exactly {', '.join(FIELDS)} ('labels' optional)")
    return validate(
        path, names["embeddings"], names.get("labels"), names["keys"], dim=dim, numeric_prefix=numeric_prefix
    )


# --- writing -----------------------------------------------------------------------------


class _Py2Pickler:
    """Writes protocol-2 pickles as Python 2 did: byte strings as BINSTRING, arrays via numpy.core.

    Stock ``pickle.load(f, encoding="latin1")`` (the LEO reference loader) and Python 2
    both read the result; the raw array bytes are written once, without copies.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def dump(self, obj: Any) -> None:
        """Write ``obj`` as one complete pickle."""
        self.f.write(b"\x80\x02")
        self.save(obj)
        self.f.write(b".")

    def _bytes(self, b: bytes | memoryview, size: int) -> None:
        if size > MAX_PICKLE_STRING:
            raise DataError(f"an array of {size:,} bytes is too large for a Python-2 pickle; write a .npz instead")
        self.f.write(b"U" + struct.pack("<B", size) if size < 256 else b"T" + struct.pack("<i", size))
        self.f.write(b)

    def _global(self, module: str, name: str) -> None:
        self.f.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def save(self, obj: Any) -> None:
        """Write one object: None, bool, int, str, bytes, tuple, list, dict, ndarray or dtype."""
        w = self.f.write
        if obj is None:
            w(b"N")
        elif obj is True or obj is False:
            w(b"\x88" if obj else b"\x89")
        elif isinstance(obj, int):
            if 0 <= obj < 256:
                w(b"K" + struct.pack("<B", obj))
            elif -(2**31) <= obj < 2**31:
                w(b"J" + struct.pack("<i", obj))
            else:
                raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
                w(b"\x8a" + struct.pack("<B", len(raw)) + raw)
        elif isinstance(obj, str):  # a Python 2 unicode
            raw = obj.encode("utf-8")
            w(b"X" + struct.pack("<I", len(raw)) + raw)
        elif isinstance(obj, bytes):  # a Python 2 str
            self._bytes(obj, len(obj))
        elif isinstance(obj, tuple):
            if not obj:
                w(b")")
            elif len(obj) <= 3:
                for v in obj:
                    self.save(v)
                w(b"\x85\x86\x87"[len(obj) - 1 : len(obj)])
            else:
                w(b"(")
                for v in obj:
                    self.save(v)
                w(b"t")
        elif isinstance(obj, list):
            w(b"](")
            for v in obj:
                self.save(v)
            w(b"e")
        elif isinstance(obj, dict):
            w(b"}(")
            for k, v in obj.items():
                self.save(k)
                self.save(v)
            w(b"u")
        elif isinstance(obj, np.dtype):
            _, (typestr, _align, _copy), state = obj.__reduce__()
            self._global("numpy", "dtype")
            self.save((typestr.encode(), 0, 1))
            w(b"R")
            self.save(tuple(v.encode() if isinstance(v, str) else v for v in state))
            w(b"b")
        elif isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise DataError("object arrays cannot be written; convert keys to str or bytes")
            a = np.ascontiguousarray(obj)
            self._global("numpy.core.multiarray", "_reconstruct")
            self._global("numpy", "ndarray")  # args: (ndarray, (0,), 'b'), as numpy writes them
            self.save((0,))
            self.save(b"b")
            w(b"\x87R(")  # TUPLE3, REDUCE, then MARK for the state tuple
            self.save(1)
            self.save(tuple(int(s) for s in a.shape))
            self.save(a.dtype)
            self.save(False)
            self._bytes(memoryview(a.reshape(-1).view(np.uint8)), a.nbytes)
            w(b"tb")  # TUPLE, BUILD
        else:
            raise DataError(f"cannot write a {type(obj).__name__} into an embeddings pickle")


def write_embeddings(
    path: Path | str,
    embeddings: Any,
    labels: Any,
    keys: Sequence[str] | Sequence[bytes] | np.ndarray,
) -> Path:
    """Write one split as ``.pkl`` (the LEO layout) or ``.npz`` (no pickle), chosen by suffix.

    ``embeddings`` is cast to float32 [n, D]; ``labels`` to int64 [n] (``None``: derived
    from the key classes in sorted order); ``keys`` are ``<prefix>-<class>-<image file>``.
    Everything is validated before anything is written, and the file appears atomically.
    In a ``.pkl``, str keys are stored as a numpy unicode array and bytes keys as a numpy
    bytes array (as in the authors' center and multiview files); a ``.npz`` stores str keys.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: choose a .pkl or .npz file name")
    x = np.asarray(embeddings)
    if x.dtype.kind not in "fiu":
        raise DataError(f"{path}: embeddings of dtype {x.dtype} are not numbers")
    x = np.ascontiguousarray(x, dtype=np.float32)
    raw_keys = list(keys.tolist() if isinstance(keys, np.ndarray) else keys)
    lab = None if labels is None else np.asarray(labels)
    if lab is not None and lab.dtype.kind not in "iu":
        raise DataError(f"{path}: labels of dtype {lab.dtype} are not integers")
    checked = validate(path, x, None if lab is None else lab.astype(np.int64), raw_keys, numeric_prefix=False)
    lab = checked.row_class if lab is None else lab.astype(np.int64)
    if path.suffix == ".npz" or checked.key_type == "str":
        key_array = np.array(checked.keys, dtype=str)
    else:
        key_array = np.array(raw_keys, dtype=bytes)
    with replacing(path, "embeddings file") as tmp, open(tmp, "wb") as f:
        if path.suffix == ".npz":
            np.savez(f, embeddings=x, labels=lab, keys=key_array)
        else:
            _Py2Pickler(f).dump({"embeddings": x, "labels": lab, "keys": key_array})
    return path


def pickle_bytes(obj: Any) -> bytes:
    """``obj`` as a Python-2-style protocol-2 pickle (dicts, lists, numbers, strings, arrays)."""
    buf = io.BytesIO()
    _Py2Pickler(buf).dump(obj)
    return buf.getvalue()
