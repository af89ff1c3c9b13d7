/*
 * ddi_runtime._cloop: the per-sample loop of ddi_runtime.Scheduler in C (optional; ddi_runtime/cloop.py is the
 * Python side and says when it is used).
 *
 * The decisions are micro/ddi_sched.c, the MCU's decision core, compiled into this extension as is (setup.py puts
 * micro/ on the include path; there is no copy): one implementation of the budget rule for boards and MCUs. This
 * file only drives it: it copies the boundary tensor into the next piece's input buffer (raw pointers, taken
 * once per interpreter from Python), runs the piece, and reports gate and exit logits back to the core.
 *
 * How a piece runs (see cloop.py for the choice): either directly, through the interpreter's C++
 * tflite::impl::Interpreter::Invoke() resolved from the interpreter wrapper's shared library (only when that
 * library exports it, as tflite-runtime does; the GIL is released around the call, as the wrapper does), or by
 * calling back the Python interpreter's bound ``invoke`` method (LiteRT, whose wrapper exports no C++ symbols;
 * Edge TPU). Everything else per sample -- decisions, cost accounting, tensor copies, the exit confidence --
 * runs here, without the Python per-piece set_tensor / get_tensor round trips.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "ddi_sched.c" /* micro/ddi_sched.c: the decision core (single translation unit, nothing copied) */

#ifdef _WIN32
#include <windows.h>
static double now_s(void) {
  LARGE_INTEGER f, c;
  QueryPerformanceFrequency(&f);
  QueryPerformanceCounter(&c);
  return (double)c.QuadPart / (double)f.QuadPart;
}
#else
#include <time.h>
static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
#endif

typedef int (*invoke_fn)(void *self); /* TfLiteStatus tflite::impl::Interpreter::Invoke() (Itanium C++ ABI) */

typedef struct {
  invoke_fn fn;       /* direct call, or NULL */
  void *self;         /* the tflite::impl::Interpreter* for fn */
  PyObject *invoke;   /* the bound Python invoke method (when fn is NULL) */
  PyObject *owner;    /* the Python interpreter object: keeps the buffers alive */
  unsigned char *in;
  Py_ssize_t in_bytes;
  const unsigned char *out;
  Py_ssize_t out_bytes;
} runner;

typedef struct {
  PyObject_HEAD
  int32_t num_runners;
  runner *runners;
  int32_t total_options;
  ddi_option *options;
  int32_t *option_runner; /* per option (piece-major), index into runners; -1 for identity */
  int32_t offsets[DDI_MAX_PIECES];
  ddi_piece pieces[DDI_MAX_PIECES];
  ddi_model model;
  int32_t has_costs;
  Py_ssize_t max_bytes;   /* the largest tensor of any runner (image, kept tensor) */
  Py_ssize_t max_logits;  /* the largest exit output */
  unsigned char *image;   /* the image as int8 (uint8 - 128) */
  unsigned char *kept;    /* a deferred exit's input */
  unsigned char *logits;  /* every exit's logits of the current sample, max_logits apart */
  PyObject *confidence;   /* the Python loop's confidence(logits, scale, zero_point), for near-threshold exits */
} LoopObject;

static void loop_dealloc(LoopObject *self) {
  int32_t i;
  if (self->runners != NULL) {
    for (i = 0; i < self->num_runners; ++i) {
      Py_XDECREF(self->runners[i].invoke);
      Py_XDECREF(self->runners[i].owner);
    }
  }
  PyMem_Free(self->runners);
  PyMem_Free(self->options);
  PyMem_Free(self->option_runner);
  PyMem_Free(self->image);
  PyMem_Free(self->kept);
  PyMem_Free(self->logits);
  Py_XDECREF(self->confidence);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static void *as_pointer(PyObject *v) {
  return v == Py_None ? NULL : PyLong_AsVoidPtr(v);
}

/* runners: (fn address | None, self address | None, invoke | None, owner, in address, in bytes, out address,
 * out bytes) each. */
static int parse_runners(LoopObject *self, PyObject *runners) {
  PyObject *seq = PySequence_Fast(runners, "runners must be a sequence");
  Py_ssize_t n, i;
  if (seq == NULL) return -1;
  n = PySequence_Fast_GET_SIZE(seq);
  self->runners = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(runner));
  if (self->runners == NULL) {
    Py_DECREF(seq);
    PyErr_NoMemory();
    return -1;
  }
  self->num_runners = (int32_t)n;
  for (i = 0; i < n; ++i) {
    runner *r = &self->runners[i];
    PyObject *fn, *me, *inv, *owner, *in, *out;
    Py_ssize_t in_bytes, out_bytes;
    if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "OOOOOnOn;a runner is (fn, self, invoke, owner, in, "
                          "in_bytes, out, out_bytes)", &fn, &me, &inv, &owner, &in, &in_bytes, &out, &out_bytes)) {
      Py_DECREF(seq);
      return -1;
    }
    r->fn = (invoke_fn)as_pointer(fn);
    r->self = as_pointer(me);
    r->in = as_pointer(in);
    r->out = as_pointer(out);
    if (PyErr_Occurred()) {
      Py_DECREF(seq);
      return -1;
    }
    if ((r->fn == NULL || r->self == NULL) && !PyCallable_Check(inv)) {
      Py_DECREF(seq);
      PyErr_SetString(PyExc_ValueError, "a runner needs an Invoke address and interpreter, or a callable invoke");
      return -1;
    }
    if (r->in == NULL || r->out == NULL || in_bytes <= 0 || out_bytes <= 0) {
      Py_DECREF(seq);
      PyErr_SetString(PyExc_ValueError, "a runner needs its input and output tensor buffers");
      return -1;
    }
    if (r->fn == NULL || r->self == NULL) {
      r->fn = NULL;
      Py_INCREF(inv);
      r->invoke = inv;
    }
    Py_INCREF(owner);
    r->owner = owner;
    r->in_bytes = in_bytes;
    r->out_bytes = out_bytes;
    if (in_bytes > self->max_bytes) self->max_bytes = in_bytes;
    if (out_bytes > self->max_bytes) self->max_bytes = out_bytes;
  }
  Py_DECREF(seq);
  return 0;
}

/* pieces: (kind, ((identity, runner, macs, out_scale, out_zero_point), ...)) each. */
static int parse_pieces(LoopObject *self, PyObject *pieces) {
  PyObject *seq = PySequence_Fast(pieces, "pieces must be a sequence");
  Py_ssize_t n, i, total = 0;
  int32_t num_exits = 0, at = 0;
  if (seq == NULL) return -1;
  n = PySequence_Fast_GET_SIZE(seq);
  if (n <= 0 || n > DDI_MAX_PIECES) {
    Py_DECREF(seq);
    PyErr_Format(PyExc_ValueError, "an export of %zd pieces (the C loop takes 1 to %d)", n, DDI_MAX_PIECES);
    return -1;
  }
  for (i = 0; i < n; ++i) {
    PyObject *p = PySequence_Fast_GET_ITEM(seq, i);
    Py_ssize_t k = PyTuple_Check(p) && PyTuple_GET_SIZE(p) == 2 ? PySequence_Size(PyTuple_GET_ITEM(p, 1)) : -1;
    if (k <= 0) {
      Py_DECREF(seq);
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a piece is (kind, options) with options");
      return -1;
    }
    total += k;
  }
  self->options = PyMem_Calloc((size_t)total, sizeof(ddi_option));
  self->option_runner = PyMem_Calloc((size_t)total, sizeof(int32_t));
  if (self->options == NULL || self->option_runner == NULL) {
    Py_DECREF(seq);
    PyErr_NoMemory();
    return -1;
  }
  self->total_options = (int32_t)total;
  for (i = 0; i < n; ++i) {
    PyObject *p = PySequence_Fast_GET_ITEM(seq, i);
    PyObject *opts = PySequence_Fast(PyTuple_GET_ITEM(p, 1), "options must be a sequence");
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(p, 0));
    Py_ssize_t k, nk;
    if (opts == NULL || (kind == -1 && PyErr_Occurred())) {
      Py_XDECREF(opts);
      Py_DECREF(seq);
      return -1;
    }
    nk = PySequence_Fast_GET_SIZE(opts);
    if (kind < DDI_FIXED || kind > DDI_EXIT) kind = DDI_FIXED; /* the Python loop runs any other kind as fixed */
    self->offsets[i] = at;
    self->pieces[i].name = "";
    self->pieces[i].kind = (int32_t)kind;
    self->pieces[i].index = kind == DDI_EXIT ? num_exits : 0;
    self->pieces[i].num_options = (int32_t)nk;
    self->pieces[i].options = &self->options[at];
    if (kind == DDI_EXIT) ++num_exits;
    for (k = 0; k < nk; ++k, ++at) {
      ddi_option *o = &self->options[at];
      int identity, zp, r;
      double macs, scale;
      if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(opts, k), "piddi;an option is (identity, runner, macs, "
                            "out_scale, out_zero_point)", &identity, &r, &macs, &scale, &zp)) {
        Py_DECREF(opts);
        Py_DECREF(seq);
        return -1;
      }
      if (identity ? r != -1 : (r < 0 || r >= self->num_runners)) {
        Py_DECREF(opts);
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "piece %zd option %zd: runner %d for identity=%d", i, k, r, identity);
        return -1;
      }
      if ((kind == DDI_GATE || kind == DDI_EXIT) && (identity || k > 0 || nk != 1)) {
        Py_DECREF(opts);
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "piece %zd: a gate or exit has exactly one option, not identity", i);
        return -1;
      }
      o->name = "";
      o->identity = identity;
      o->input_edge = -1;
      o->output_edge = -1;
      o->macs = macs;
      o->out_scale = scale;
      o->out_zero_point = zp;
      o->num_outputs = identity ? 0 : (int32_t)self->runners[r].out_bytes;
      self->option_runner[at] = identity ? -1 : r;
      if (kind == DDI_EXIT) {
        if (o->num_outputs > DDI_MAX_CLASSES) {
          Py_DECREF(opts);
          Py_DECREF(seq);
          PyErr_Format(PyExc_ValueError, "an exit with %d logits (the decision core takes at most %d)",
                       o->num_outputs, DDI_MAX_CLASSES);
          return -1;
        }
        if (o->num_outputs > self->max_logits) self->max_logits = o->num_outputs;
      }
    }
    Py_DECREF(opts);
  }
  Py_DECREF(seq);
  if (self->pieces[n - 1].kind != DDI_EXIT) {
    PyErr_SetString(PyExc_ValueError, "the C loop needs an export that ends with an exit");
    return -1;
  }
  self->model.num_pieces = (int32_t)n;
  self->model.num_exits = num_exits;
  self->model.num_classes = (int32_t)self->max_logits;
  self->model.pieces = self->pieces;
  return 0;
}

static int loop_init(LoopObject *self, PyObject *args, PyObject *kwds) {
  static char *kwlist[] = {"pieces", "runners", "image_bytes", "confidence", NULL};
  PyObject *pieces, *runners, *confidence = Py_None;
  Py_ssize_t image_bytes;
  if (self->runners != NULL) {
    PyErr_SetString(PyExc_RuntimeError, "Loop is initialised once");
    return -1;
  }
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOn|O", kwlist, &pieces, &runners, &image_bytes, &confidence))
    return -1;
  if (confidence != Py_None) {
    Py_INCREF(confidence);
    self->confidence = confidence;
  }
  if (image_bytes <= 0) {
    PyErr_SetString(PyExc_ValueError, "image_bytes must be positive");
    return -1;
  }
  if (parse_runners(self, runners) < 0 || parse_pieces(self, pieces) < 0) return -1;
  if (image_bytes > self->max_bytes) self->max_bytes = image_bytes;
  self->image = PyMem_Malloc((size_t)self->max_bytes);
  self->kept = PyMem_Malloc((size_t)self->max_bytes);
  self->logits = PyMem_Malloc((size_t)(self->max_logits > 0 ? self->max_logits : 1) *
                              (size_t)(self->model.num_exits + 1));
  if (self->image == NULL || self->kept == NULL || self->logits == NULL) {
    PyErr_NoMemory();
    return -1;
  }
  return 0;
}

/* set_costs(costs) -> reserves: every option's cost in the plan's kind (one list per piece), computed from them
 * by the core exactly as Scheduler.costs() does; the caller compares them with the plan's reserves. */
static PyObject *loop_set_costs(LoopObject *self, PyObject *costs) {
  PyObject *seq = PySequence_Fast(costs, "costs must be a sequence"), *out;
  double reserves[DDI_MAX_PIECES];
  int32_t i, k;
  if (seq == NULL) return NULL;
  if (PySequence_Fast_GET_SIZE(seq) != self->model.num_pieces) {
    Py_DECREF(seq);
    return PyErr_Format(PyExc_ValueError, "costs for %zd pieces, the export has %d", PySequence_Fast_GET_SIZE(seq),
                        self->model.num_pieces);
  }
  self->has_costs = 0;
  for (i = 0; i < self->model.num_pieces; ++i) {
    PyObject *c = PySequence_Fast(PySequence_Fast_GET_ITEM(seq, i), "a piece's costs must be a sequence");
    if (c == NULL || PySequence_Fast_GET_SIZE(c) != self->pieces[i].num_options) {
      Py_XDECREF(c);
      Py_DECREF(seq);
      if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "piece %d: one cost per option", i);
      return NULL;
    }
    for (k = 0; k < self->pieces[i].num_options; ++k) {
      double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(c, k));
      if (v == -1.0 && PyErr_Occurred()) {
        Py_DECREF(c);
        Py_DECREF(seq);
        return NULL;
      }
      /* the plan's cost, whatever its kind, goes into the latency slot: the core runs with DDI_COST_LATENCY_US */
      self->options[self->offsets[i] + k].latency_us = v;
    }
    Py_DECREF(c);
  }
  Py_DECREF(seq);
  if (ddi_reserves(&self->model, DDI_COST_LATENCY_US, reserves) != DDI_OK) {
    PyErr_SetString(PyExc_ValueError, "the decision core refused the piece table");
    return NULL;
  }
  out = PyList_New(self->model.num_pieces);
  if (out == NULL) return NULL;
  for (i = 0; i < self->model.num_pieces; ++i) {
    PyObject *v = PyFloat_FromDouble(reserves[i]);
    if (v == NULL) {
      Py_DECREF(out);
      return NULL;
    }
    PyList_SET_ITEM(out, i, v);
  }
  self->has_costs = 1;
  return out;
}

/* The core's exp is libm's; numpy's (the Python loop's) can differ from it by an ulp (SIMD exp on AVX512
 * machines). Where an exit's confidence is within 1e-9 of its threshold, the Python loop's own confidence decides,
 * and the threshold the core compares with is nudged to give that decision (the core itself is unchanged). */
static int settle_near_threshold(LoopObject *self, ddi_state *s, double *th, const ddi_option *o,
                                 const unsigned char *logits, Py_ssize_t n) {
  double c, t, py;
  PyObject *res;
  int stop;
  if (s->thresholds == NULL || self->confidence == NULL) return 0;
  t = th[s->exit_j];
  if (!(t <= 1.0)) return 0; /* (NaN, > 1: never stops, in both loops) */
  c = ddi_confidence((const int8_t *)logits, (int32_t)n, o->out_scale, o->out_zero_point);
  if (!(fabs(c - t) <= 1e-9 * fabs(t))) return 0;
  res = PyObject_CallFunction(self->confidence, "y#di", (const char *)logits, n, o->out_scale, o->out_zero_point);
  if (res == NULL) return -1;
  py = PyFloat_AsDouble(res);
  Py_DECREF(res);
  if (py == -1.0 && PyErr_Occurred()) return -1;
  stop = py >= t;
  if (stop && !(c >= t)) th[s->exit_j] = c;
  if (!stop && c >= t) th[s->exit_j] = nextafter(c, INFINITY);
  return 0;
}

static int run_runner(runner *r, int32_t piece) {
  if (r->fn != NULL) {
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = r->fn(r->self);
    Py_END_ALLOW_THREADS
    if (status != 0) {
      PyErr_Format(PyExc_RuntimeError, "piece %d: the interpreter's Invoke failed (TfLiteStatus %d); "
                   "Scheduler(loop='python') shows the interpreter's own message", piece, status);
      return -1;
    }
    return 0;
  } else {
    PyObject *res = PyObject_CallNoArgs(r->invoke);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
  }
}

/* run(image, budget, thresholds, defer_exits) -> (pred, exit, spent, macs, decisions, halted, logits, rows,
 * invoke_s), or None when the budget is below the cheapest answer (the core refuses it before running: the
 * caller runs the Python loop, which answers such a budget without an error). */
static PyObject *loop_run(LoopObject *self, PyObject *args) {
  Py_buffer img;
  double budget, th[DDI_MAX_PIECES], invoke_s = 0.0;
  PyObject *thresholds, *decisions, *logits;
  int defer, rc;
  int32_t rows = 0, i;
  ddi_state s;
  const unsigned char *cur;
  Py_ssize_t cur_bytes, kept_bytes = 0;
  if (!self->has_costs) {
    PyErr_SetString(PyExc_RuntimeError, "Loop.run before Loop.set_costs");
    return NULL;
  }
  if (!PyArg_ParseTuple(args, "y*dOp", &img, &budget, &thresholds, &defer)) return NULL;
  if (img.len <= 0 || img.len > self->max_bytes) {
    PyBuffer_Release(&img);
    return PyErr_Format(PyExc_ValueError, "an image of %zd bytes", img.len);
  }
  for (i = 0; i < img.len; ++i) self->image[i] = ((const unsigned char *)img.buf)[i] ^ 0x80u; /* uint8 - 128 */
  cur_bytes = img.len;
  PyBuffer_Release(&img);
  if (thresholds != Py_None) {
    PyObject *seq = PySequence_Fast(thresholds, "thresholds must be a sequence or None");
    if (seq == NULL) return NULL;
    if (PySequence_Fast_GET_SIZE(seq) != self->model.num_exits) {
      Py_DECREF(seq);
      return PyErr_Format(PyExc_ValueError, "%zd thresholds for %d exits", PySequence_Fast_GET_SIZE(seq),
                          self->model.num_exits);
    }
    for (i = 0; i < self->model.num_exits; ++i) {
      th[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
      if (th[i] == -1.0 && PyErr_Occurred()) {
        Py_DECREF(seq);
        return NULL;
      }
    }
    Py_DECREF(seq);
  }
  rc = ddi_begin(&s, &self->model, DDI_COST_LATENCY_US, budget, thresholds == Py_None ? NULL : th);
  if (rc == DDI_ERR_BUDGET) Py_RETURN_NONE;
  if (rc != DDI_OK || ddi_set_defer_exits(&s, defer) != DDI_OK)
    return PyErr_Format(PyExc_ValueError, "the decision core refused the sample (status %d)", rc);
  cur = self->image;
  for (;;) {
    ddi_action a = ddi_next(&s);
    runner *r;
    const unsigned char *src;
    Py_ssize_t src_bytes;
    double t0;
    if (a.piece == DDI_DONE) break;
    if (a.piece < 0) return PyErr_Format(PyExc_RuntimeError, "the decision core was driven out of order");
    if (a.keep) { /* a deferred exit: keep its input, run nothing */
      memcpy(self->kept, cur, (size_t)cur_bytes);
      kept_bytes = cur_bytes;
      continue;
    }
    if (a.identity) continue;
    r = &self->runners[self->option_runner[self->offsets[a.piece] + a.option]];
    src = a.from_kept ? self->kept : cur;
    src_bytes = a.from_kept ? kept_bytes : cur_bytes;
    if (src_bytes != r->in_bytes)
      return PyErr_Format(PyExc_ValueError, "piece %d option %d: its input takes %zd bytes, the tensor before it "
                          "has %zd", a.piece, a.option, r->in_bytes, src_bytes);
    t0 = now_s();
    memcpy(r->in, src, (size_t)src_bytes);
    if (run_runner(r, a.piece) < 0) return NULL;
    invoke_s += now_s() - t0;
    if (a.kind == DDI_GATE) {
      ddi_report_gate(&s, (const int8_t *)r->out, (int32_t)r->out_bytes);
    } else if (a.kind == DDI_EXIT) {
      memcpy(self->logits + (size_t)rows * (size_t)self->max_logits, r->out, (size_t)r->out_bytes);
      ++rows;
      if (settle_near_threshold(self, &s, th, &self->pieces[a.piece].options[0], r->out, r->out_bytes) < 0)
        return NULL;
      ddi_report_exit(&s, (const int8_t *)r->out, (int32_t)r->out_bytes);
    } else {
      cur = r->out;
      cur_bytes = r->out_bytes;
    }
  }
  {
    ddi_result res = ddi_get_result(&s);
    decisions = PyList_New(res.num_decisions);
    if (decisions == NULL) return NULL;
    for (i = 0; i < res.num_decisions; ++i) {
      PyObject *v = PyLong_FromLong(ddi_decision(&s, i));
      if (v == NULL) {
        Py_DECREF(decisions);
        return NULL;
      }
      PyList_SET_ITEM(decisions, i, v);
    }
    logits = PyByteArray_FromStringAndSize((const char *)self->logits, (Py_ssize_t)rows * self->max_logits);
    if (logits == NULL) {
      Py_DECREF(decisions);
      return NULL;
    }
    return Py_BuildValue("iiddNONid", res.pred, res.exit, res.spent, res.macs, decisions,
                         res.halted ? Py_True : Py_False, logits, rows, invoke_s);
  }
}

static PyObject *loop_direct(LoopObject *self, PyObject *Py_UNUSED(ignored)) {
  int32_t i, n = 0;
  for (i = 0; i < self->num_runners; ++i) n += self->runners[i].fn != NULL;
  return PyLong_FromLong(n);
}

static PyMethodDef loop_methods[] = {
    {"set_costs", (PyCFunction)loop_set_costs, METH_O,
     "set_costs(costs) -> reserves: the plan's option costs (one list per piece); returns the reserves the core "
     "computes from them."},
    {"run", (PyCFunction)loop_run, METH_VARARGS,
     "run(image, budget, thresholds, defer_exits) -> (pred, exit, spent, macs, decisions, halted, logits, rows, "
     "invoke_s) or None (budget below the cheapest answer)."},
    {"direct", (PyCFunction)loop_direct, METH_NOARGS,
     "direct() -> how many piece interpreters run through the C++ Invoke (the others call back into Python)."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ddi_runtime._cloop.Loop",
    .tp_doc = "Loop(pieces, runners, image_bytes): one export's pieces driven by micro/ddi_sched.c.",
    .tp_basicsize = sizeof(LoopObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)loop_init,
    .tp_dealloc = (destructor)loop_dealloc,
    .tp_methods = loop_methods,
};

static struct PyModuleDef cloop_module = {
    PyModuleDef_HEAD_INIT, "_cloop",
    "The C per-sample loop of ddi_runtime.Scheduler around micro/ddi_sched.c (see ddi_runtime.cloop).", -1, NULL};

PyMODINIT_FUNC PyInit__cloop(void) {
  PyObject *m;
  if (PyType_Ready(&LoopType) < 0) return NULL;
  m = PyModule_Create(&cloop_module);
  if (m == NULL) return NULL;
  Py_INCREF(&LoopType);
  if (PyModule_AddObject(m, "Loop", (PyObject *)&LoopType) < 0) {
    Py_DECREF(&LoopType);
    Py_DECREF(m);
    return NULL;
  }
  if (PyModule_AddIntConstant(m, "MAX_PIECES", DDI_MAX_PIECES) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
