# Typing stub for a cffi out-of-line module: the FFI object and its compiled library.
from typing import Any

import cffi

ffi: cffi.FFI
lib: Any
