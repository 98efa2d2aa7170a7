"""A loaded Go library: typed Python methods over the generated exports.

Why closures per method: the per-call path must be only what is needed (check, one
allocation, write, one cgo call, read), so each method is compiled once, at open, into a
closure with its codecs bound; the closures are set on the instance, shadowing the generated
class's methods (which stay for type checkers and for `call_method`). Closing swaps them
for functions that raise, so a closed library costs no check on the live path.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, ClassVar, Self

from keel.ffi import cdecl, fastgen
from keel.ffi.build import BuiltLibrary, read_build
from keel.ffi.codec import (
    Arena,
    CallbackCodec,
    Codec,
    StructCodec,
    align,
    make_codec,
    raise_callback_errors,
)
from keel.ffi.completion import Completer, PendingCall
from keel.ffi.errors import (
    ArgumentTypeError,
    BuildError,
    ClosedLibraryError,
    GoError,
    GoPanic,
    InterfaceError,
    TooManyCallsError,
)
from keel.ffi.layout import compile_layout
from keel.ffi.loops import current_loop
from keel.ffi.model import Interface, Method, read_interface

logger = logging.getLogger("keel.ffi")

# At most this many async calls of one library may be in flight on one loop.
MAX_IN_FLIGHT = 1 << 16
CLOSE_TIMEOUT_SECONDS = 10.0
CLOSE_POLL_SECONDS = 0.001
PANIC_KIND, CALLBACK_KIND = "P", "C"
# The status of a call whose library closed before Go finished it.
CLOSED_STATUS = -1
# Memory of calls Go had not finished when their library closed: kept for the process's life
# (Go may still write into it), never freed under Go's feet.
_orphans: list[PendingCall] = []
_trampolines_registered: set[str] = set()


def import_extension(directory: Path, name: str) -> ModuleType:
    """Import an extension of a build (once per process: Go libraries cannot unload)."""
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    candidates = sorted(directory.glob(f"{name}*.so"))
    if not candidates:
        raise BuildError(f"{directory} has no extension {name}: rebuild it")
    loader = importlib.machinery.ExtensionFileLoader(name, str(candidates[0]))
    spec = importlib.util.spec_from_file_location(name, candidates[0], loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[name] = module
    return module


class GoLibrary:
    """Base of generated bindings: `HashingLibrary.open(build_directory)`."""

    interface: ClassVar[type]

    def __init__(self, build: BuiltLibrary | Path | str) -> None:
        built = build if isinstance(build, BuiltLibrary) else read_build(Path(build))
        self._model: Interface = read_interface(self.interface)
        if built.interface != self._model.name:
            raise InterfaceError(f"{built.directory} was built for {built.interface}, "
                                 f"not {self._model.name}")
        module = import_extension(built.directory, built.module)
        self._ffi: Any = module.ffi
        self._lib: Any = module.lib
        self._built = built
        self._closed = False
        self._call_ids = itertools.count(1)
        self._completers: dict[object, Completer] = {}
        # Loops in several threads may share the library: taking and returning completers
        # (and the spare) happens under this lock.
        self._completers_lock = threading.Lock()
        # One completer made now and lent to whichever loop needs one next: its eventfd
        # lives as long as the library, not as long as each burst of async calls. Loops
        # that find it lent out get a temporary completer, closed when they go idle.
        self._home = Completer(self._ffi, self._lib)
        self._spare: Completer | None = self._home
        self._struct_codecs: dict[str, StructCodec] = {}
        self._register_trampolines()
        self._methods: dict[str, Callable[..., Any]] = {}
        for method in self._model.methods:
            compiled = self._compile(method)
            self._methods[method.name] = compiled
            setattr(self, method.name, compiled)
        if built.fast_module is not None:
            self._install_fast_path(import_extension(built.directory, built.fast_module))

    @classmethod
    def open(cls, build: BuiltLibrary | Path | str) -> Self:
        return cls(build)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def directory(self) -> Path:
        return self._built.directory

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------

    def call_method(self, name: str, *arguments: Any, **named: Any) -> Any:
        """Call a method by name (what the generated class's bodies do)."""
        if self._closed:
            raise ClosedLibraryError(f"{self._model.name}.{name}: the library is closed")
        try:
            function = self._methods[name]
        except KeyError:
            raise AttributeError(f"{self._model.name} has no method {name!r}") from None
        return function(*arguments, **named)

    def _error(self, where: str, status: int, keep: list[Any]) -> Exception:
        pointer = self._lib.keel_error_take(status)
        try:
            text = self._ffi.string(pointer).decode("utf-8", "replace")
        finally:
            self._lib.keel_free(pointer)
        kind, message = text[:1], text[1:]
        if kind == CALLBACK_KIND:
            raise_callback_errors(keep)
        return (GoPanic if kind == PANIC_KIND else GoError)(where, message)

    def _register_trampolines(self) -> None:
        ffi = self._ffi
        for callback in self._model.callbacks:
            name = cdecl.callback_python_name(callback)
            key = f"{self._built.module}.{name}"
            if key in _trampolines_registered:
                continue

            def trampoline(handle: Any, arguments: Any, result: Any) -> int:
                record = ffi.from_handle(handle)
                codec: CallbackCodec = record.codec
                return codec.invoke(record, arguments, result)

            ffi.def_extern(name=name)(trampoline)
            _trampolines_registered.add(key)

    def _compile(self, method: Method) -> Callable[..., Any]:
        ffi, lib = self._ffi, self._lib
        where = f"{self._model.name}.{method.name}"
        function = getattr(lib, cdecl.export_name(self._model, method))
        signature = inspect.signature(getattr(self.interface, method.name))
        fields: list[tuple[str, Codec]] = [
            (parameter.name, make_codec(ffi, lib, parameter.type, self._struct_codecs))
            for parameter in method.parameters]
        result_codec = (make_codec(ffi, lib, method.returns, self._struct_codecs)
                        if method.returns is not None else None)
        has_arguments, has_result = bool(fields), result_codec is not None
        arguments_type = cdecl.args_type(self._model, method) + " *"
        result_type = cdecl.result_type(self._model, method) + " *"
        arguments_size = align(ffi.sizeof(cdecl.args_type(self._model, method))) \
            if has_arguments else 0
        fixed_size = arguments_size + (align(ffi.sizeof(cdecl.result_type(self._model, method)))
                                       if has_result else 0)
        count = len(fields)
        new, cast, null, free = ffi.new, ffi.cast, ffi.NULL, lib.keel_free
        if has_arguments:
            check_arguments, write_arguments, _ = compile_layout(
                ffi, cdecl.args_type(self._model, method), fields, None)

        def bind(values: tuple[Any, ...], named: dict[str, Any]) -> tuple[Any, ...]:
            if named or len(values) != count:
                try:
                    bound = signature.bind(None, *values, **named)
                except TypeError as error:
                    raise ArgumentTypeError(f"{where}: {error}") from None
                return tuple(bound.arguments.values())[1:]
            return values

        def prepare(values: tuple[Any, ...]) -> tuple[Any, Any, Any, list[Any]]:
            """Check, allocate once, write: (buffer, arguments, result, kept objects)."""
            extra = check_arguments(values, where) if has_arguments else 0
            buffer = new("char[]", fixed_size + extra)
            arguments = cast(arguments_type, buffer) if has_arguments else None
            result = cast(result_type, buffer + arguments_size) if has_result else None
            keep: list[Any] = []
            if has_arguments:
                write_arguments(arguments, values, Arena(ffi, buffer, fixed_size), keep)
            return buffer, arguments, result, keep

        def finish(result: Any, keep: list[Any]) -> Any:
            value = None
            if result_codec is not None:
                try:
                    value = result_codec.read(result.value)
                finally:
                    if result.arena != null:
                        free(result.arena)
            if keep:
                raise_callback_errors(keep)  # after the arena is freed
            return value

        if method.is_async:
            return self._compile_async(method, function, bind, prepare, finish)

        if not has_arguments and not has_result:
            def call_empty(*values: Any, **named: Any) -> None:
                if values or named:
                    bind(values, named)
                status = function()
                if status:
                    raise self._error(where, status, [])

            return call_empty

        def call(*values: Any, **named: Any) -> Any:
            buffer, arguments, result, keep = prepare(bind(values, named))
            if has_arguments and has_result:
                status = function(arguments, result)
            elif has_arguments:
                status = function(arguments)
            else:
                status = function(result)
            if status:
                if has_result and result.arena != null:
                    free(result.arena)
                raise self._error(where, status, keep)
            finished = finish(result, keep)
            del buffer  # the casts above do not own it: it must live until the result is read
            return finished

        return call

    def _compile_async(self, method: Method, function: Any,
                       bind: Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]],
                       prepare: Callable[[tuple[Any, ...]], tuple[Any, Any, Any, list[Any]]],
                       finish: Callable[[Any, list[Any]], Any]) -> Callable[..., Any]:
        where = f"{self._model.name}.{method.name}"
        has_arguments, has_result = bool(method.parameters), method.returns is not None
        null, free = self._ffi.NULL, self._lib.keel_free

        def release(call: PendingCall) -> None:
            """An abandoned call finished: free what Go allocated, drop its error."""
            _buffer, _arguments, result, _keep, _values = call.keep
            if has_result and result.arena != null:
                free(result.arena)
            if call.status:
                free(self._lib.keel_error_take(call.status))

        async def call_async(*values: Any, **named: Any) -> Any:
            values = bind(values, named)
            prepared = prepare(values)
            _buffer, arguments, result, keep = prepared
            completer = self._completer()
            if len(completer.pending) >= MAX_IN_FLIGHT:
                raise TooManyCallsError(f"{where}: {MAX_IN_FLIGHT} async calls already in "
                                        "flight on this loop")
            call_id = next(self._call_ids)
            # The argument objects too: Go reads str and bytes in place until it finishes,
            # even after a cancelled await has dropped this frame.
            pending = PendingCall(call_id, (*prepared, values), release)
            completer.pending[call_id] = pending
            parameters = [completer.go_id, call_id]
            if has_arguments:
                parameters.append(arguments)
            if has_result:
                parameters.append(result)
            status = function(*parameters)
            if status:
                completer.pending.pop(call_id, None)
                self._after_wait(completer)
                raise self._error(where, status, keep)
            try:
                await completer.wait(pending)
            finally:
                self._after_wait(completer)
            if pending.status == CLOSED_STATUS:
                raise ClosedLibraryError(f"{where}: the library was closed before Go finished")
            if pending.status:
                if has_result and result.arena != null:
                    free(result.arena)
                raise self._error(where, pending.status, keep)
            return finish(result, keep)

        return call_async

    def _install_fast_path(self, fast: ModuleType) -> None:
        """Methods with only scalars go through the C fast path; it falls back to the
        checked closures above for anything unusual, and raises through _error."""
        eligible = [method for method in self._model.methods if fastgen.eligible(method)]
        fallbacks = tuple(self._methods[method.name] for method in eligible)
        factories = tuple(self._error_factory(f"{self._model.name}.{method.name}")
                          for method in eligible)
        fast._setup(fallbacks, factories, tuple(fastgen.fast_classes(self._model)))
        if hasattr(fast, "_decode"):  # builds before the C decoders lack it
            classes = tuple(struct.python_class for struct in self._model.structs)
            for index, struct in enumerate(self._model.structs):
                codec = self._struct_codecs.get(struct.name)
                if codec is not None:
                    codec.use_c_decoder(fast._decode, classes, index)
        for method in eligible:
            setattr(self, method.name, getattr(fast, method.name))

    def _error_factory(self, where: str) -> Callable[[int], Exception]:
        def factory(status: int) -> Exception:
            return self._error(where, status, [])

        return factory

    # -- completers ----------------------------------------------------------------------

    def _completer(self) -> Completer:
        adapter, token = current_loop()
        with self._completers_lock:
            completer = self._completers.get(token)
            if completer is None:
                completer = self._spare or Completer(self._ffi, self._lib)
                self._spare = None
                completer.adapter, completer.token = adapter, token
                self._completers[token] = completer
            return completer

    def _after_wait(self, completer: Completer) -> None:
        """Give an idle completer back (as the spare) or close it; abandoned calls keep it."""
        with self._completers_lock:
            if not completer.idle or self._completers.get(completer.token) is not completer:
                return
            del self._completers[completer.token]
            completer.adapter = completer.token = None
            if completer is self._home and not self._closed:
                self._spare = completer
                return
        completer.close()

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new calls, cancel in-flight async calls, wait for Go, close the eventfds.

        Calls Go has not finished within CLOSE_TIMEOUT_SECONDS keep their memory for the
        life of the process (Go may still write into it); the Go library itself stays loaded
        (Go cannot be unloaded) and can be opened again.
        """
        if self._closed:
            return
        self._closed = True
        for method in self._model.methods:
            setattr(self, method.name, self._closed_method(method))
        completers = list(self._completers.values())
        for completer in completers:
            for call in completer.pending.values():
                self._lib.keel_cancel(call.call_id)
        deadline = time.monotonic() + CLOSE_TIMEOUT_SECONDS
        while self._lib.keel_in_flight() and time.monotonic() < deadline:
            time.sleep(CLOSE_POLL_SECONDS)
        for completer in completers:
            completer.drain()
            completer.close_go_side()
            if completer.pending:
                logger.warning("%s closed with %d async calls Go did not finish; their memory "
                               "is kept", self._model.name, len(completer.pending))
                for call in completer.pending.values():
                    _orphans.append(call)
                    call.done, call.status = True, CLOSED_STATUS
                    if call.event is not None:
                        call.event.set()
                completer.pending.clear()
            if completer.pumping:
                completer.eventfd.write(1)  # the pump wakes, finds its call done, closes this
            else:
                self._completers.pop(completer.token, None)
                completer.eventfd.close()
        if self._spare is not None:
            self._spare.close()
            self._spare = None

    def _closed_method(self, method: Method) -> Callable[..., Any]:
        message = f"{self._model.name}.{method.name}: the library is closed"
        if method.is_async:
            async def closed_async(*values: Any, **named: Any) -> Any:
                raise ClosedLibraryError(message)

            return closed_async

        def closed(*values: Any, **named: Any) -> Any:
            raise ClosedLibraryError(message)

        return closed
