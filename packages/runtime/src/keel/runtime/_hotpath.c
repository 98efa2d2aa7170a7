/* keel.runtime._hotpath: the per-message path of the runtime, in C.

   Why: on an echo server every message costs a completion dispatch, a task step (one
   coroutine resumption), a stream read and a stream write. In Python those were about ten
   function frames and three coroutine/generator objects per message, twice uvloop's whole
   CPU cost. Here:
   - `run_ready` steps ready tasks (PyIter_Send on the coroutine) and parks them on the trap
     they yield; anything unusual goes back to Python (Task._park, Task._step, Task._finish).
   - `CompletionQueue.dispatch` reaps the io_uring completion queue straight from the mapped
     ring; the reader waiting on a multishot recv is stepped right there, the task waiting on
     a plain operation is queued as ready, both without any Python frame; other completions
     call their Python `complete(result, flags)`.
   - `Receiver` (one socket's multishot recv) is also the awaitable a read returns and the
     trap its task parks on: `am_send` hands `(count, buffer)` back to the awaiting
     coroutine, so a read costs no coroutine or generator object.
   - `StreamCore` (the C base of SocketStream) gives `read` and `write`: the read starts on
     the Receiver, the write sends at once with MSG_DONTWAIT; everything else (a full socket
     buffer, other buffer types, the epoll driver's reads, errors) goes to the Python slow
     paths `_read_slow` and `_write_rest`.
   Ownership passing holds as before: the kernel only ever writes into provided buffers, and
   the caller's buffer is referenced from `read` until the awaiting coroutine gets it back. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/io_uring.h>

#define SEND_NOW_FLAGS (MSG_NOSIGNAL | MSG_DONTWAIT)

/* Configured once from Python (keel.runtime.drivers.uring and keel.runtime.net). */
static PyObject *busy_error_class;  /* BusyResourceError */
static PyObject *read_error_factory; /* callable(count, fd, closed) -> exception */

/* The scheduler's Task class and the offsets of its `coro`, `_trap` and `_scope` slots:
   read and written directly (no attribute lookup) for tasks of exactly that class. */
static PyTypeObject *task_type;
static Py_ssize_t task_coro_offset = -1, task_trap_offset = -1, task_scope_offset = -1;

static PyObject *name_task, *name_trap, *name_scope, *name_effective, *name_coro,
    *name_current_task, *name_finish, *name_step, *name_park, *name_deliver_cancel,
    *name_complete, *name_ready_now, *name_read_slow, *name_write_rest, *name_cancelling,
    *name_popleft, *name_arm;

static PyObject *task_get(PyObject *task, Py_ssize_t offset, PyObject *name)
{
    if (offset >= 0 && Py_TYPE(task) == task_type) {
        PyObject *value = *(PyObject **)((char *)task + offset);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(task, name);
}

static int task_set(PyObject *task, Py_ssize_t offset, PyObject *name, PyObject *value)
{
    if (offset >= 0 && Py_TYPE(task) == task_type) {
        PyObject **slot = (PyObject **)((char *)task + offset);
        Py_XSETREF(*slot, Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(task, name, value);
}

/* ---------------------------------------------------------------------------------------
   Done: an awaitable whose result is known now (a read from pending bytes, a whole write). */

typedef struct {
    PyObject_HEAD
    PyObject *result;
} DoneObject;

static PyTypeObject DoneType;

static PyObject *done_new(PyObject *result) /* steals `result` */
{
    if (result == NULL)
        return NULL;
    DoneObject *done = PyObject_New(DoneObject, &DoneType);
    if (done == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    done->result = result;
    return (PyObject *)done;
}

static void done_dealloc(DoneObject *self)
{
    Py_XDECREF(self->result);
    PyObject_Free(self);
}

static PyObject *done_await(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

static PySendResult done_send(PyObject *self, PyObject *argument, PyObject **result)
{
    (void)argument;
    *result = Py_NewRef(((DoneObject *)self)->result);
    return PYGEN_RETURN;
}

static PyObject *done_next(PyObject *self)
{
    _PyGen_SetStopIterationValue(((DoneObject *)self)->result);
    return NULL;
}

static PyObject *done_send_method(PyObject *self, PyObject *argument)
{
    (void)argument;
    return done_next(self);
}

static PyMethodDef done_methods[] = {
    {"send", done_send_method, METH_O, "Finish at once with the known result."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods done_async = {
    .am_await = done_await,
    .am_send = done_send,
};

static PyTypeObject DoneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keel.runtime._hotpath.Done",
    .tp_basicsize = sizeof(DoneObject),
    .tp_dealloc = (destructor)done_dealloc,
    .tp_as_async = &done_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = done_next,
    .tp_methods = done_methods,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable that completes at once with its result.",
};

/* ---------------------------------------------------------------------------------------
   Receiver: one socket's multishot recv; the awaitable of its reads; the trap they park on. */

typedef struct {
    PyObject_HEAD
    PyObject *task;    /* the parked task (set by the scheduler), or NULL/None */
    PyObject *target;  /* where the bytes of the waiting read go */
    PyObject *owner;   /* what the read hands back (the caller's buffer) */
    PyObject *pending; /* bytearray: bytes that arrived with no read waiting */
    Py_ssize_t limit;  /* the waiting read takes at most this many bytes */
    int waiting;       /* a read is outstanding (started, not yet handed back) */
    int yielded;       /* ... and its awaiting coroutine has parked on it */
    int armed, closed, eof, error, fd;
    unsigned long long user_data;
    /* The provided-buffer ring and its pool (keel.native ProvidedBufferRing). */
    struct io_uring_buf_ring *ring;
    unsigned entries;
    char *pool;
    unsigned buffer_size;
} ReceiverObject;

static PyTypeObject ReceiverType;

/* The Receiver subclass last seen (RecvStream): an exact type compare instead of a walk up
   its MRO for every yielded trap and every completion. */
static PyTypeObject *known_receiver_type;

static int is_receiver(PyObject *candidate)
{
    PyTypeObject *kind = Py_TYPE(candidate);
    if (kind == known_receiver_type || kind == &ReceiverType)
        return 1;
    if (!PyType_IsSubtype(kind, &ReceiverType))
        return 0;
    Py_INCREF(kind);
    Py_XSETREF(known_receiver_type, kind);
    return 1;
}

static int has_task(PyObject *task)
{
    return task != NULL && task != Py_None;
}

static void receiver_forget_read(ReceiverObject *self)
{
    self->waiting = 0;
    self->yielded = 0;
    Py_CLEAR(self->target);
    Py_CLEAR(self->owner);
}

static int receiver_init(ReceiverObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "ring_address", "entries", "pool_address", "buffer_size",
                               NULL};
    unsigned long long ring_address, pool_address;
    unsigned entries, buffer_size;
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iKIKI", keywords, &fd, &ring_address,
                                     &entries, &pool_address, &buffer_size))
        return -1;
    if (entries == 0 || (entries & (entries - 1)) || buffer_size == 0) {
        PyErr_Format(PyExc_ValueError,
                     "Receiver needs a power-of-two entry count and a buffer size, got "
                     "entries=%u buffer_size=%u", entries, buffer_size);
        return -1;
    }
    self->fd = fd;
    self->ring = (struct io_uring_buf_ring *)(uintptr_t)ring_address;
    self->entries = entries;
    self->pool = (char *)(uintptr_t)pool_address;
    self->buffer_size = buffer_size;
    if (self->pending == NULL) {
        self->pending = PyByteArray_FromStringAndSize(NULL, 0);
        if (self->pending == NULL)
            return -1;
    }
    return 0;
}

static int receiver_traverse(ReceiverObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->task);
    Py_VISIT(self->target);
    Py_VISIT(self->owner);
    Py_VISIT(self->pending);
    return 0;
}

static int receiver_clear(ReceiverObject *self)
{
    Py_CLEAR(self->task);
    Py_CLEAR(self->target);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->pending);
    return 0;
}

/* Static base types: a heap subclass's subtype_dealloc drops the reference to its type. */
static void receiver_dealloc(ReceiverObject *self)
{
    PyObject_GC_UnTrack(self);
    receiver_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Hand provided buffer `bid` back to the kernel: one slot write, then a release store of the
   tail (only this thread writes it), as keel.native's keel_buf_ring_push does. */
static void receiver_recycle(ReceiverObject *self, unsigned bid)
{
    struct io_uring_buf_ring *ring = self->ring;
    unsigned short tail = ring->tail;
    struct io_uring_buf *slot = &ring->bufs[tail & (self->entries - 1)];
    slot->addr = (uint64_t)(uintptr_t)(self->pool + (size_t)bid * self->buffer_size);
    slot->len = self->buffer_size;
    slot->bid = (unsigned short)bid;
    __atomic_store_n(&ring->tail, (unsigned short)(tail + 1), __ATOMIC_RELEASE);
}

static PyObject *read_error(ReceiverObject *self, Py_ssize_t count)
{
    PyObject *error = PyObject_CallFunction(read_error_factory, "nii", count, self->fd,
                                            self->closed);
    if (error != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(error), error);
        Py_DECREF(error);
    }
    return NULL;
}

/* Begin a read of at most `limit` bytes into `target`, handing back `owner`: the receiver
   itself (to await) or a Done. */
static PyObject *receiver_begin(ReceiverObject *self, PyObject *target, Py_ssize_t limit,
                                PyObject *owner)
{
    if (self->waiting) {
        PyErr_Format(busy_error_class, "another task is already reading socket fd %d",
                     self->fd);
        return NULL;
    }
    if (!(self->armed && !self->closed && limit > 0 && PyByteArray_GET_SIZE(self->pending) == 0)) {
        /* Pending bytes, the end, an error, or not armed yet: Python decides. */
        PyObject *limit_object = PyLong_FromSsize_t(limit);
        if (limit_object == NULL)
            return NULL;
        PyObject *outcome = PyObject_CallMethodObjArgs((PyObject *)self, name_ready_now, target,
                                                       limit_object, NULL);
        Py_DECREF(limit_object);
        if (outcome == NULL)
            return NULL;
        if (outcome != Py_None) {
            Py_ssize_t count = PyLong_AsSsize_t(outcome);
            if (count == -1 && PyErr_Occurred()) {
                Py_DECREF(outcome);
                return NULL;
            }
            if (count < 0) {
                Py_DECREF(outcome);
                return read_error(self, count);
            }
            PyObject *pair = PyTuple_Pack(2, outcome, owner);
            Py_DECREF(outcome);
            return done_new(pair);
        }
        Py_DECREF(outcome);
    }
    self->waiting = 1;
    self->yielded = 0;
    Py_INCREF(target);
    Py_XSETREF(self->target, target);
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    self->limit = limit;
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *receiver_start(ReceiverObject *self, PyObject *const *args, Py_ssize_t count)
{
    if (count != 3) {
        PyErr_Format(PyExc_TypeError, "start(target, limit, owner) takes 3 arguments, got %zd",
                     count);
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit < 0) {
        PyErr_Format(PyExc_ValueError, "read size must be >= 0, got %zd", limit);
        return NULL;
    }
    return receiver_begin(self, args[0], limit, args[2]);
}

static PySendResult receiver_finish(ReceiverObject *self, PyObject *argument,
                                    PyObject **result);

static PySendResult receiver_send(PyObject *object, PyObject *argument, PyObject **result)
{
    ReceiverObject *self = (ReceiverObject *)object;
    if (!self->waiting) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a keel Receiver was awaited without a read started on it");
        return PYGEN_ERROR;
    }
    PyObject *outcome = NULL;
    if (!self->yielded) {
        if (PyByteArray_GET_SIZE(self->pending) == 0 && self->armed && !self->closed) {
            self->yielded = 1;
            *result = Py_NewRef(object); /* park the task on this receiver (the trap) */
            return PYGEN_NEXT;
        }
        /* Bytes (or the end) came between the read's start and its await (a read spawned
           as a task): take them now instead of parking on data that already arrived. */
        PyObject *limit_object = PyLong_FromSsize_t(self->limit);
        if (limit_object == NULL)
            return PYGEN_ERROR;
        outcome = PyObject_CallMethodObjArgs(object, name_ready_now, self->target, limit_object,
                                             NULL);
        Py_DECREF(limit_object);
        if (outcome == NULL)
            return PYGEN_ERROR;
        if (outcome == Py_None) {
            Py_DECREF(outcome);
            self->yielded = 1;
            *result = Py_NewRef(object);
            return PYGEN_NEXT;
        }
        argument = outcome;
    }
    /* Resumed with the read's outcome (or it was known above): a byte count, or -errno. */
    PySendResult status = receiver_finish(self, argument, result);
    Py_XDECREF(outcome);
    return status;
}

static PySendResult receiver_finish(ReceiverObject *self, PyObject *argument,
                                    PyObject **result)
{
    PyObject *owner = Py_NewRef(self->owner);
    receiver_forget_read(self);
    Py_ssize_t count = PyLong_AsSsize_t(argument);
    if (count == -1 && PyErr_Occurred()) {
        Py_DECREF(owner);
        return PYGEN_ERROR;
    }
    if (count < 0) {
        Py_DECREF(owner);
        read_error(self, count);
        return PYGEN_ERROR;
    }
    *result = PyTuple_Pack(2, argument, owner);
    Py_DECREF(owner);
    return *result == NULL ? PYGEN_ERROR : PYGEN_RETURN;
}

static PyObject *receiver_next(PyObject *self)
{
    PyObject *result;
    PySendResult status = receiver_send(self, Py_None, &result);
    if (status == PYGEN_NEXT)
        return result;
    if (status == PYGEN_RETURN) {
        _PyGen_SetStopIterationValue(result);
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *receiver_send_method(PyObject *self, PyObject *argument)
{
    PyObject *result;
    PySendResult status = receiver_send(self, argument, &result);
    if (status == PYGEN_NEXT)
        return result;
    if (status == PYGEN_RETURN) {
        _PyGen_SetStopIterationValue(result);
        Py_DECREF(result);
    }
    return NULL;
}

static PyObject *receiver_await(PyObject *self)
{
    return Py_NewRef(self);
}

/* The trap protocol: a cancelled read leaves at once (the kernel never writes into the
   caller's buffer; bytes arriving later stay pending for the next read). */
static PyObject *receiver_abort(ReceiverObject *self, PyObject *unused)
{
    (void)unused;
    Py_CLEAR(self->task);
    receiver_forget_read(self);
    Py_RETURN_TRUE;
}

static int step(PyObject *runtime, PyObject *task, PyObject *value);

/* The waiting read's buffer cannot be written any more (a memoryview released meanwhile):
   the bytes stay pending, and the read fails with that error instead of the loop. */
static int receiver_fail_read(ReceiverObject *self, const char *source, int result,
                              unsigned bid, PyObject *ready_append)
{
    PyObject *error_type, *error, *traceback;
    PyErr_Fetch(&error_type, &error, &traceback);
    PyErr_NormalizeException(&error_type, &error, &traceback);
    Py_XDECREF(error_type);
    Py_XDECREF(traceback);
    if (error == NULL)
        return -1;
    if (PyByteArray_Resize(self->pending, result) < 0) {
        Py_DECREF(error);
        return -1;
    }
    memcpy(PyByteArray_AS_STRING(self->pending), source, (size_t)result);
    receiver_recycle(self, bid);
    PyObject *task = self->task;
    self->task = NULL;
    receiver_forget_read(self);
    PyObject *entry = PyTuple_Pack(3, task, Py_None, error);
    Py_DECREF(error);
    int failed = entry == NULL || task_set(task, task_trap_offset, name_trap, Py_None) < 0;
    Py_DECREF(task);
    if (failed) {
        Py_XDECREF(entry);
        return -1;
    }
    PyObject *appended = PyObject_CallOneArg(ready_append, entry);
    Py_DECREF(entry);
    if (appended == NULL)
        return -1;
    Py_DECREF(appended);
    return 1;
}

/* A completion that carries data for a waiting read with nothing pending before it: copy,
   recycle the provided buffer, resume the task. Returns 1 if handled, 0 if Python should
   handle it (`complete`), -1 on error. */
static int receiver_complete_fast(ReceiverObject *self, int result, unsigned flags,
                                  PyObject *ready_append, PyObject *runtime)
{
    if (!(flags & IORING_CQE_F_BUFFER) || self->closed || !self->waiting || !self->yielded ||
        !has_task(self->task) || PyByteArray_GET_SIZE(self->pending) != 0 || result < 0 ||
        (unsigned)result > self->buffer_size)
        return 0;
    unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
    if (bid >= self->entries)
        return 0;
    const char *source = self->pool + (size_t)bid * self->buffer_size;
    Py_buffer view;
    if (PyObject_GetBuffer(self->target, &view, PyBUF_WRITABLE) < 0)
        return receiver_fail_read(self, source, result, bid, ready_append);
    Py_ssize_t room = view.len < self->limit ? view.len : self->limit;
    Py_ssize_t count = result;
    if (count > room) {
        /* The rest waits for the next read (bounded: one provided buffer's worth). */
        if (PyByteArray_Resize(self->pending, count - room) < 0) {
            PyBuffer_Release(&view);
            return -1;
        }
        memcpy(PyByteArray_AS_STRING(self->pending), source + room, (size_t)(count - room));
        count = room;
    }
    memcpy(view.buf, source, (size_t)count);
    PyBuffer_Release(&view);
    receiver_recycle(self, bid);
    if (!(flags & IORING_CQE_F_MORE))
        self->armed = 0;
    PyObject *task = self->task;
    self->task = NULL;
    if (task_set(task, task_trap_offset, name_trap, Py_None) < 0) {
        Py_DECREF(task);
        return -1;
    }
    PyObject *count_object = PyLong_FromSsize_t(count);
    if (count_object == NULL) {
        Py_DECREF(task);
        return -1;
    }
    /* Resume the reader right here (no trip through the ready queue): its coroutine gets
       (count, buffer) from receiver_send and runs until it parks again. */
    int stepped = step(runtime, task, count_object);
    Py_DECREF(count_object);
    Py_DECREF(task);
    return stepped < 0 ? -1 : 1;
}

static PyObject *receiver_get_pending_size(ReceiverObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->pending ? PyByteArray_GET_SIZE(self->pending) : 0);
}

/* A coroutine closed while it awaits this receiver (GeneratorExit) calls close() on it:
   the read is over, so the next one is not refused as busy. */
static PyObject *receiver_close(ReceiverObject *self, PyObject *unused)
{
    (void)unused;
    Py_CLEAR(self->task);
    receiver_forget_read(self);
    Py_RETURN_NONE;
}

static PyMethodDef receiver_methods[] = {
    {"close", (PyCFunction)receiver_close, METH_NOARGS,
     "End the outstanding read (its awaiting coroutine was closed); not the socket."},
    {"start", (PyCFunction)(void (*)(void))receiver_start, METH_FASTCALL,
     "start(target, limit, owner): begin a read; an awaitable of (count, owner)."},
    {"abort", (PyCFunction)receiver_abort, METH_NOARGS,
     "The trap protocol: abandon the waiting read (always at once); True."},
    {"send", receiver_send_method, METH_O, "The iterator protocol's send (for tracers)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef receiver_members[] = {
    {"task", T_OBJECT, offsetof(ReceiverObject, task), 0, "The parked task, or None."},
    {"buffer", T_OBJECT, offsetof(ReceiverObject, target), READONLY,
     "Where the waiting read's bytes go, or None."},
    {"pending", T_OBJECT, offsetof(ReceiverObject, pending), READONLY,
     "Bytes that arrived with no read waiting (a bytearray)."},
    {"limit", T_PYSSIZET, offsetof(ReceiverObject, limit), 0, "The waiting read's size."},
    {"waiting", T_INT, offsetof(ReceiverObject, waiting), READONLY,
     "Whether a read is outstanding."},
    {"armed", T_INT, offsetof(ReceiverObject, armed), 0, "The multishot recv is armed."},
    {"closed", T_INT, offsetof(ReceiverObject, closed), 0, "The socket was closed."},
    {"eof", T_INT, offsetof(ReceiverObject, eof), 0, "The peer ended the stream."},
    {"error", T_INT, offsetof(ReceiverObject, error), 0, "A pending errno, or 0."},
    {"fd", T_INT, offsetof(ReceiverObject, fd), READONLY, "The socket's descriptor."},
    {"user_data", T_ULONGLONG, offsetof(ReceiverObject, user_data), 0,
     "The multishot recv's user_data."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef receiver_getset[] = {
    {"pending_size", (getter)receiver_get_pending_size, NULL, "len(pending)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyAsyncMethods receiver_async = {
    .am_await = receiver_await,
    .am_send = receiver_send,
};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keel.runtime._hotpath.Receiver",
    .tp_basicsize = sizeof(ReceiverObject),
    .tp_dealloc = (destructor)receiver_dealloc,
    .tp_as_async = &receiver_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = receiver_next,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)receiver_traverse,
    .tp_clear = (inquiry)receiver_clear,
    .tp_methods = receiver_methods,
    .tp_members = receiver_members,
    .tp_getset = receiver_getset,
    .tp_init = (initproc)receiver_init,
    .tp_new = PyType_GenericNew,
    .tp_doc = "One socket's multishot recv, the awaitable of its reads and their trap.",
};

/* ---------------------------------------------------------------------------------------
   StreamCore: the C base of keel.runtime.net.SocketStream (read and write). */

typedef struct {
    PyObject_HEAD
    PyObject *receiver; /* a Receiver, or NULL/None (epoll, no multishot recv) */
    int fd;
    char closed;
    char writing;
} StreamCoreObject;

static int stream_traverse(StreamCoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->receiver);
    return 0;
}

static int stream_clear(StreamCoreObject *self)
{
    Py_CLEAR(self->receiver);
    return 0;
}

static void stream_dealloc(StreamCoreObject *self)
{
    PyObject_GC_UnTrack(self);
    stream_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *stream_read(StreamCoreObject *self, PyObject *const *args, Py_ssize_t count,
                             PyObject *keywords)
{
    PyObject *buffer = NULL, *size = Py_None;
    if (keywords == NULL && (count == 1 || count == 2)) {
        buffer = args[0];
        if (count == 2)
            size = args[1];
    }
    PyObject *receiver = self->receiver;
    if (buffer != NULL && !self->closed && receiver != NULL && receiver != Py_None &&
        PyByteArray_CheckExact(buffer)) {
        Py_ssize_t limit = PyByteArray_GET_SIZE(buffer);
        if (size != Py_None && PyLong_CheckExact(size)) {
            Py_ssize_t wanted = PyLong_AsSsize_t(size);
            if (wanted == -1 && PyErr_Occurred())
                PyErr_Clear();
            else if (wanted >= 0) {
                if (wanted < limit)
                    limit = wanted;
                size = Py_None;
            }
        }
        if (size == Py_None)
            return receiver_begin((ReceiverObject *)receiver, buffer, limit, buffer);
    }
    /* Everything else: the Python coroutine (checks, other buffers, the epoll driver). */
    PyObject *method = PyObject_GetAttr((PyObject *)self, name_read_slow);
    if (method == NULL)
        return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, (size_t)count, keywords);
    Py_DECREF(method);
    return result;
}

static PyObject *stream_write(StreamCoreObject *self, PyObject *const *args, Py_ssize_t count,
                              PyObject *keywords)
{
    if (keywords != NULL || count < 1 || count > 2) {
        /* Keywords or a wrong count: the Python method raises the right error. */
        PyObject *method = PyObject_GetAttr((PyObject *)self, name_write_rest);
        if (method == NULL)
            return NULL;
        PyObject *result = PyObject_Vectorcall(method, args, (size_t)count, keywords);
        Py_DECREF(method);
        return result;
    }
    PyObject *buffer = args[0];
    PyObject *size = count == 2 ? args[1] : Py_None;
    Py_ssize_t limit = -1; /* no size: the whole buffer */
    int usable = !self->closed && !self->writing;
    if (usable && size != Py_None) {
        limit = PyLong_CheckExact(size) ? PyLong_AsSsize_t(size) : -1;
        if (limit < 0) {
            PyErr_Clear();
            usable = 0; /* the slow path names the bad size */
        }
    }
    Py_ssize_t sent = 0;
    if (usable) {
        Py_buffer view;
        if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) == 0) {
            Py_ssize_t total = limit >= 0 && limit < view.len ? limit : view.len;
            ssize_t result = send(self->fd, view.buf, (size_t)total, SEND_NOW_FLAGS);
            int error = errno;
            PyBuffer_Release(&view);
            if (result == total) {
                PyObject *total_object = PyLong_FromSsize_t(total);
                if (total_object == NULL)
                    return NULL;
                PyObject *pair = PyTuple_Pack(2, total_object, buffer);
                Py_DECREF(total_object);
                return done_new(pair);
            }
            if (result < 0) {
                if (error != EAGAIN && error != EWOULDBLOCK && error != EINTR) {
                    errno = error;
                    return PyErr_SetFromErrno(PyExc_OSError);
                }
                result = 0;
            }
            sent = result;
        } else {
            PyErr_Clear(); /* not a simple buffer: the slow path checks and converts it */
        }
    }
    /* The rest (or all of it) through the Python coroutine, which waits for room. */
    PyObject *sent_object = PyLong_FromSsize_t(sent);
    if (sent_object == NULL)
        return NULL;
    PyObject *result = PyObject_CallMethodObjArgs((PyObject *)self, name_write_rest, buffer,
                                                  size, sent_object, NULL);
    Py_DECREF(sent_object);
    return result;
}

static PyObject *stream_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    StreamCoreObject *self = (StreamCoreObject *)PyType_GenericNew(type, args, kwargs);
    if (self != NULL)
        self->fd = -1; /* no descriptor until SocketStream.__init__ sets _fd */
    return (PyObject *)self;
}

static PyMethodDef stream_methods[] = {
    {"read", (PyCFunction)(void (*)(void))stream_read, METH_FASTCALL | METH_KEYWORDS,
     "read(buffer, size=None): an awaitable of (count, buffer); 0 means end of stream."},
    {"write", (PyCFunction)(void (*)(void))stream_write, METH_FASTCALL | METH_KEYWORDS,
     "write(buffer, size=None): an awaitable of (count, buffer) once every byte (or the "
     "first `size`) was sent."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef stream_members[] = {
    {"_receiver", T_OBJECT, offsetof(StreamCoreObject, receiver), 0,
     "The driver's Receiver for this socket, or None."},
    {"_fd", T_INT, offsetof(StreamCoreObject, fd), 0, "The socket's descriptor."},
    {"_closed", T_BOOL, offsetof(StreamCoreObject, closed), 0, "close() was called."},
    {"_writing", T_BOOL, offsetof(StreamCoreObject, writing), 0,
     "A write is waiting for room in the socket buffer."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject StreamCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keel.runtime._hotpath.StreamCore",
    .tp_basicsize = sizeof(StreamCoreObject),
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)stream_traverse,
    .tp_clear = (inquiry)stream_clear,
    .tp_methods = stream_methods,
    .tp_members = stream_members,
    .tp_new = stream_new,
    .tp_doc = "The C half of a socket stream: read and write on the hot path.",
};

/* ---------------------------------------------------------------------------------------
   The scheduler's ready loop. */

static int append_ready(PyObject *ready_append, PyObject *task, PyObject *value)
{
    PyObject *entry = PyTuple_Pack(3, task, value, Py_None);
    if (entry == NULL)
        return -1;
    PyObject *appended = PyObject_CallOneArg(ready_append, entry);
    Py_DECREF(entry);
    if (appended == NULL)
        return -1;
    Py_DECREF(appended);
    return 0;
}

/* Park `task` on the Receiver it yielded; a cancelled scope aborts the wait at once. */
static int park_on_receiver(PyObject *task, ReceiverObject *receiver)
{
    Py_INCREF(task);
    Py_XSETREF(receiver->task, task);
    if (task_set(task, task_trap_offset, name_trap, (PyObject *)receiver) < 0)
        return -1;
    PyObject *scope = task_get(task, task_scope_offset, name_scope);
    if (scope == NULL)
        return -1;
    PyObject *effective = PyObject_GetAttr(scope, name_effective);
    Py_DECREF(scope);
    if (effective == NULL)
        return -1;
    int cancelled = PyObject_IsTrue(effective);
    Py_DECREF(effective);
    if (cancelled < 0)
        return -1;
    if (cancelled) {
        PyObject *done = PyObject_CallMethodNoArgs(task, name_deliver_cancel);
        if (done == NULL)
            return -1;
        Py_DECREF(done);
    }
    return 0;
}

/* One step of `task` with `value` (no error to throw). */
static int step(PyObject *runtime, PyObject *task, PyObject *value)
{
    PyObject *coro = task_get(task, task_coro_offset, name_coro);
    if (coro == NULL)
        return -1;
    if (PyObject_SetAttr(runtime, name_current_task, task) < 0) {
        Py_DECREF(coro);
        return -1;
    }
    PyObject *yielded = NULL;
    PySendResult status = PyIter_Send(coro, value, &yielded);
    Py_DECREF(coro);
    PyObject *error_type = NULL, *error = NULL, *traceback = NULL;
    if (status == PYGEN_ERROR) {
        PyErr_Fetch(&error_type, &error, &traceback);
        PyErr_NormalizeException(&error_type, &error, &traceback);
        if (traceback != NULL && error != NULL)
            PyException_SetTraceback(error, traceback);
    }
    if (PyObject_SetAttr(runtime, name_current_task, Py_None) < 0) {
        Py_XDECREF(yielded);
        Py_XDECREF(error_type);
        Py_XDECREF(error);
        Py_XDECREF(traceback);
        return -1;
    }
    PyObject *outcome;
    if (status == PYGEN_NEXT) {
        if (is_receiver(yielded)) {
            int parked = park_on_receiver(task, (ReceiverObject *)yielded);
            Py_DECREF(yielded);
            return parked;
        }
        outcome = PyObject_CallMethodOneArg(task, name_park, yielded);
        Py_DECREF(yielded);
    } else if (status == PYGEN_RETURN) {
        outcome = PyObject_CallMethodObjArgs(task, name_finish, yielded, Py_None, NULL);
        Py_DECREF(yielded);
    } else {
        outcome = PyObject_CallMethodObjArgs(task, name_finish, Py_None,
                                             error != NULL ? error : Py_None, NULL);
        Py_XDECREF(error_type);
        Py_XDECREF(error);
        Py_XDECREF(traceback);
    }
    if (outcome == NULL)
        return -1;
    Py_DECREF(outcome);
    return 0;
}

/* run_ready(ready, runtime): step every task queued in `ready` (a deque of
   (task, value, error)) once; tasks readied meanwhile wait for the next turn. */
static PyObject *run_ready(PyObject *module, PyObject *const *args, Py_ssize_t count)
{
    (void)module;
    if (count != 2) {
        PyErr_SetString(PyExc_TypeError, "run_ready(ready, runtime) takes 2 arguments");
        return NULL;
    }
    PyObject *ready = args[0], *runtime = args[1];
    Py_ssize_t length = PyObject_Length(ready);
    if (length < 0)
        return NULL;
    PyObject *popleft = PyObject_GetAttr(ready, name_popleft);
    if (popleft == NULL)
        return NULL;
    for (Py_ssize_t index = 0; index < length; index++) {
        PyObject *entry = PyObject_CallNoArgs(popleft);
        if (entry == NULL)
            goto failed;
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
            Py_DECREF(entry);
            PyErr_SetString(PyExc_TypeError, "ready entries are (task, value, error) tuples");
            goto failed;
        }
        PyObject *task = PyTuple_GET_ITEM(entry, 0);
        PyObject *value = PyTuple_GET_ITEM(entry, 1);
        PyObject *error = PyTuple_GET_ITEM(entry, 2);
        int result;
        if (error == Py_None) {
            result = step(runtime, task, value);
        } else {
            PyObject *outcome = PyObject_CallMethodObjArgs(task, name_step, value, error, NULL);
            Py_XDECREF(outcome);
            result = outcome == NULL ? -1 : 0;
        }
        Py_DECREF(entry);
        if (result < 0)
            goto failed;
    }
    Py_DECREF(popleft);
    Py_RETURN_NONE;
failed:
    Py_DECREF(popleft);
    return NULL;
}

/* ---------------------------------------------------------------------------------------
   CompletionQueue: reap the mapped io_uring completion queue and dispatch. */

typedef struct {
    PyObject_HEAD
    unsigned *head;
    unsigned *tail;
    unsigned mask;
    unsigned entries;
    struct io_uring_cqe *cqes;
    unsigned long long first_operation;
    PyObject *operations;      /* dict: user_data -> operation */
    PyObject *operation_class; /* the driver's plain one-shot operation (_Op) */
    PyObject *ready_append;    /* runtime._ready.append */
    PyObject *own_completion;  /* driver callback for user_data < first_operation */
    PyObject *runtime;         /* the Runtime whose tasks a completion resumes */
} CompletionQueueObject;

static int queue_traverse(CompletionQueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->operations);
    Py_VISIT(self->operation_class);
    Py_VISIT(self->ready_append);
    Py_VISIT(self->own_completion);
    Py_VISIT(self->runtime);
    return 0;
}

static int queue_clear(CompletionQueueObject *self)
{
    Py_CLEAR(self->operations);
    Py_CLEAR(self->operation_class);
    Py_CLEAR(self->ready_append);
    Py_CLEAR(self->own_completion);
    Py_CLEAR(self->runtime);
    return 0;
}

static void queue_dealloc(CompletionQueueObject *self)
{
    PyObject_GC_UnTrack(self);
    queue_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int queue_init(CompletionQueueObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"head_address", "tail_address", "mask", "entries",
                               "cqes_address", "first_operation", "operations",
                               "operation_class", "ready_append", "own_completion", "runtime",
                               NULL};
    unsigned long long head, tail, cqes, first;
    unsigned mask, entries;
    PyObject *operations, *operation_class, *ready_append, *own_completion, *runtime;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "KKIIKKO!OOOO", keywords, &head, &tail,
                                     &mask, &entries, &cqes, &first, &PyDict_Type, &operations,
                                     &operation_class, &ready_append, &own_completion,
                                     &runtime))
        return -1;
    if (head == 0 || tail == 0 || cqes == 0 || entries == 0 || mask + 1 != entries) {
        PyErr_SetString(PyExc_ValueError,
                        "CompletionQueue needs the mapped ring's head, tail and cqes addresses "
                        "and mask == entries - 1");
        return -1;
    }
    self->head = (unsigned *)(uintptr_t)head;
    self->tail = (unsigned *)(uintptr_t)tail;
    self->mask = mask;
    self->entries = entries;
    self->cqes = (struct io_uring_cqe *)(uintptr_t)cqes;
    self->first_operation = first;
    Py_INCREF(operations);
    Py_XSETREF(self->operations, operations);
    Py_INCREF(operation_class);
    Py_XSETREF(self->operation_class, operation_class);
    Py_INCREF(ready_append);
    Py_XSETREF(self->ready_append, ready_append);
    Py_INCREF(own_completion);
    Py_XSETREF(self->own_completion, own_completion);
    Py_INCREF(runtime);
    Py_XSETREF(self->runtime, runtime);
    return 0;
}

static int dispatch_one(CompletionQueueObject *self, unsigned long long user_data, int result,
                        unsigned flags)
{
    if (user_data < self->first_operation) {
        PyObject *done = PyObject_CallFunction(self->own_completion, "KiI", user_data, result,
                                               flags);
        Py_XDECREF(done);
        return done == NULL ? -1 : 0;
    }
    PyObject *key = PyLong_FromUnsignedLongLong(user_data);
    if (key == NULL)
        return -1;
    PyObject *operation = PyDict_GetItemWithError(self->operations, key);
    if (operation == NULL) {
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 0; /* cancelled and forgotten: stale */
    }
    Py_INCREF(operation);
    /* Multishot operations stay registered while the kernel says "more". */
    if (!(flags & IORING_CQE_F_MORE) && PyDict_DelItem(self->operations, key) < 0) {
        Py_DECREF(key);
        Py_DECREF(operation);
        return -1;
    }
    Py_DECREF(key);
    int handled = 0;
    if (is_receiver(operation)) {
        handled = receiver_complete_fast((ReceiverObject *)operation, result, flags,
                                         self->ready_append, self->runtime);
    } else if ((PyObject *)Py_TYPE(operation) == self->operation_class) {
        PyObject *cancelling = PyObject_GetAttr(operation, name_cancelling);
        if (cancelling == NULL) {
            handled = -1;
        } else if (cancelling == Py_False) {
            /* _Op.complete inlined: resume the task with the result. */
            PyObject *task = PyObject_GetAttr(operation, name_task);
            if (task == NULL) {
                handled = -1;
            } else if (!has_task(task)) {
                handled = 1; /* nobody parked on it: nothing to resume */
            } else {
                PyObject *value = PyLong_FromLong(result);
                handled = (value == NULL ||
                           task_set(task, task_trap_offset, name_trap, Py_None) < 0 ||
                           append_ready(self->ready_append, task, value) < 0) ? -1 : 1;
                Py_XDECREF(value);
            }
            Py_XDECREF(task);
        }
        Py_XDECREF(cancelling);
    }
    if (handled == 0) {
        PyObject *done = PyObject_CallMethod(operation, "complete", "iI", result, flags);
        Py_XDECREF(done);
        handled = done == NULL ? -1 : 1;
    }
    Py_DECREF(operation);
    return handled < 0 ? -1 : 0;
}

/* dispatch(): reap every ready completion (at most one queue's worth) and dispatch each;
   returns how many. The head is released per completion, before its dispatch runs. */
static PyObject *queue_dispatch(CompletionQueueObject *self, PyObject *unused)
{
    (void)unused;
    if (self->operations == NULL) {
        PyErr_SetString(PyExc_ValueError, "CompletionQueue is not initialised");
        return NULL;
    }
    unsigned head = *self->head;
    unsigned taken = 0;
    while (taken < self->entries) {
        unsigned tail = __atomic_load_n(self->tail, __ATOMIC_ACQUIRE);
        if (head == tail)
            break;
        const struct io_uring_cqe *cqe = &self->cqes[head & self->mask];
        unsigned long long user_data = cqe->user_data;
        int result = cqe->res;
        unsigned flags = cqe->flags;
        head++;
        taken++;
        __atomic_store_n(self->head, head, __ATOMIC_RELEASE);
        if (dispatch_one(self, user_data, result, flags) < 0)
            return NULL;
    }
    return PyLong_FromUnsignedLong(taken);
}

static PyMethodDef queue_methods[] = {
    {"dispatch", (PyCFunction)queue_dispatch, METH_NOARGS,
     "Reap and dispatch every ready completion; returns how many."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CompletionQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "keel.runtime._hotpath.CompletionQueue",
    .tp_basicsize = sizeof(CompletionQueueObject),
    .tp_dealloc = (destructor)queue_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)queue_traverse,
    .tp_clear = (inquiry)queue_clear,
    .tp_methods = queue_methods,
    .tp_init = (initproc)queue_init,
    .tp_new = PyType_GenericNew,
    .tp_doc = "A mapped io_uring completion queue and the dispatch of its completions.",
};

/* ---------------------------------------------------------------------------------------
   The module. */

static PyObject *configure(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    static char *keywords[] = {"busy_error", "read_error", NULL};
    PyObject *busy, *factory;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO", keywords, &busy, &factory))
        return NULL;
    if (!PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError, "read_error must be callable");
        return NULL;
    }
    Py_INCREF(busy);
    Py_XSETREF(busy_error_class, busy);
    Py_INCREF(factory);
    Py_XSETREF(read_error_factory, factory);
    Py_RETURN_NONE;
}

static Py_ssize_t slot_offset(PyObject *kind, PyObject *name)
{
    PyObject *descriptor = PyObject_GetAttr(kind, name);
    if (descriptor == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descriptor, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY))
            offset = member->offset;
    }
    Py_DECREF(descriptor);
    return offset;
}

static PyObject *register_task_class(PyObject *module, PyObject *kind)
{
    (void)module;
    if (!PyType_Check(kind)) {
        PyErr_SetString(PyExc_TypeError, "register_task_class needs a class");
        return NULL;
    }
    Py_INCREF(kind);
    Py_XSETREF(task_type, (PyTypeObject *)kind);
    task_coro_offset = slot_offset(kind, name_coro);
    task_trap_offset = slot_offset(kind, name_trap);
    task_scope_offset = slot_offset(kind, name_scope);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"register_task_class", register_task_class, METH_O,
     "register_task_class(Task): the class whose coro/_trap/_scope slots are used directly."},
    {"run_ready", (PyCFunction)(void (*)(void))run_ready, METH_FASTCALL,
     "run_ready(ready, runtime): step each task queued in `ready` once."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "configure(busy_error, read_error): the runtime's exception types and factory."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    .m_name = "keel.runtime._hotpath",
    .m_doc = "The runtime's per-message path in C (see _hotpath.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

#define INTERN(variable, text)                                                                 \
    do {                                                                                       \
        variable = PyUnicode_InternFromString(text);                                           \
        if (variable == NULL)                                                                  \
            return NULL;                                                                       \
    } while (0)

PyMODINIT_FUNC PyInit__hotpath(void)
{
    INTERN(name_task, "task");
    INTERN(name_trap, "_trap");
    INTERN(name_scope, "_scope");
    INTERN(name_effective, "_effective");
    INTERN(name_coro, "coro");
    INTERN(name_current_task, "current_task");
    INTERN(name_finish, "_finish");
    INTERN(name_step, "_step");
    INTERN(name_park, "_park");
    INTERN(name_deliver_cancel, "_deliver_cancel");
    INTERN(name_complete, "complete");
    INTERN(name_ready_now, "ready_now");
    INTERN(name_read_slow, "_read_slow");
    INTERN(name_write_rest, "_write_rest");
    INTERN(name_cancelling, "cancelling");
    INTERN(name_popleft, "popleft");
    INTERN(name_arm, "arm");
    busy_error_class = Py_NewRef(PyExc_RuntimeError);
    if (PyType_Ready(&DoneType) < 0 || PyType_Ready(&ReceiverType) < 0 ||
        PyType_Ready(&StreamCoreType) < 0 || PyType_Ready(&CompletionQueueType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Done", (PyObject *)&DoneType) < 0 ||
        PyModule_AddObjectRef(module, "Receiver", (PyObject *)&ReceiverType) < 0 ||
        PyModule_AddObjectRef(module, "StreamCore", (PyObject *)&StreamCoreType) < 0 ||
        PyModule_AddObjectRef(module, "CompletionQueue", (PyObject *)&CompletionQueueType) < 0 ||
        PyModule_AddIntConstant(module, "SEND_NOW_FLAGS", SEND_NOW_FLAGS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
