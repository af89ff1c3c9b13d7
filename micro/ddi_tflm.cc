/*
 * ddi_tflm.cc: the thin TFLM layer of the DDI runtime (see ddi_tflm.h).
 *
 * NOT built in this repository: it needs the TensorFlow Lite Micro sources (a checkout of
 * github.com/tensorflow/tflite-micro, or the Arduino/ESP-IDF/STM32 TFLM library) and a generated model
 * directory (python micro/gen.py --model_dir=D --out=micro/generated/<name>). Compile together:
 *   micro/ddi_sched.c, micro/ddi_tflm.cc, every .cc and ddi_model_table.c in micro/generated/<name>/,
 *   include paths: micro/, micro/generated/<name>/, the TFLM root, and TFLM's third_party flatbuffers and
 *   gemmlowp/ruy headers. See BUILD.md for board recipes.
 *
 * Memory: one static arena of DDI_ARENA_BYTES (the largest arena any piece needs, measured with the TFLM
 * interpreter, plus a margin) shared by every piece, and one activation buffer of DDI_MAX_BOUNDARY_BYTES that
 * carries the int8 boundary tensor from one piece to the next (each piece's interpreter re-plans the arena,
 * which overwrites the previous piece's tensors). The interpreter object lives in static storage and is
 * rebuilt in place for every piece.
 */
#include "ddi_tflm.h"

#include <string.h>

#include <new>

#include "ddi_model_table.h"
#include "ddi_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

#ifndef TFLITE_SCHEMA_VERSION
#define TFLITE_SCHEMA_VERSION 3
#endif

#ifndef DDI_MAX_CLASSES_TFLM
#define DDI_MAX_CLASSES_TFLM 256  // logits buffer for gates and exits
#endif

namespace {

alignas(16) uint8_t g_arena[DDI_ARENA_BYTES];
alignas(16) int8_t g_activation[DDI_MAX_BOUNDARY_BYTES];
size_t g_activation_bytes = 0;
bool g_defer_exits = false;
#ifdef DDI_DEFER_EXITS
// The deferred exit's input (ddi_set_defer_exits): one more boundary buffer, so opt-in at compile time.
alignas(16) int8_t g_kept[DDI_MAX_BOUNDARY_BYTES];
size_t g_kept_bytes = 0;
#endif
size_t g_max_arena_used = 0;

tflite::MicroMutableOpResolver<DDI_NUM_OPS> g_resolver;
bool g_ready = false;

alignas(tflite::MicroInterpreter) uint8_t g_interp_storage[sizeof(tflite::MicroInterpreter)];

#define DDI_ADD_OP(op_name, method) \
  if (g_resolver.method() != kTfLiteOk) return DDI_TFLM_ERR_RESOLVER;

int RegisterOps() {
  DDI_OPS(DDI_ADD_OP)
  return DDI_OK;
}

#undef DDI_ADD_OP

// Runs one piece option on g_activation. Gates and exits copy their logits to `logits` (capacity
// `logits_cap`, count in *n_logits) and leave the activation alone; fixed pieces and blocks replace it.
int RunPiece(const ddi_action& a, int8_t* logits, int32_t logits_cap, int32_t* n_logits) {
  const tflite::Model* model = tflite::GetModel(a.model);
  if (model->version() != TFLITE_SCHEMA_VERSION) return DDI_TFLM_ERR_SCHEMA;
  tflite::MicroInterpreter* interp =
      new (g_interp_storage) tflite::MicroInterpreter(model, g_resolver, g_arena, DDI_ARENA_BYTES);
  int rc = DDI_OK;
  if (interp->AllocateTensors() != kTfLiteOk) {
    rc = DDI_TFLM_ERR_ALLOC;
  } else {
    TfLiteTensor* in = interp->input(0);
    if (in == nullptr || in->type != kTfLiteInt8 || in->bytes != g_activation_bytes) {
      rc = DDI_TFLM_ERR_TENSOR;
    } else {
      memcpy(in->data.int8, g_activation, g_activation_bytes);
      if (interp->Invoke() != kTfLiteOk) {
        rc = DDI_TFLM_ERR_INVOKE;
      } else {
        TfLiteTensor* out = interp->output(0);
        if (out == nullptr || out->type != kTfLiteInt8) {
          rc = DDI_TFLM_ERR_TENSOR;
        } else if (a.kind == DDI_GATE || a.kind == DDI_EXIT) {
          if (static_cast<int32_t>(out->bytes) > logits_cap) {
            rc = DDI_TFLM_ERR_TENSOR;
          } else {
            memcpy(logits, out->data.int8, out->bytes);
            *n_logits = static_cast<int32_t>(out->bytes);
          }
        } else if (out->bytes > sizeof(g_activation)) {
          rc = DDI_TFLM_ERR_TENSOR;
        } else {
          memcpy(g_activation, out->data.int8, out->bytes);
          g_activation_bytes = out->bytes;
        }
      }
    }
    if (interp->arena_used_bytes() > g_max_arena_used) g_max_arena_used = interp->arena_used_bytes();
  }
  interp->~MicroInterpreter();
  return rc;
}

}  // namespace

extern "C" int ddi_tflm_init(void) {
  if (g_ready) return DDI_OK;
  int rc = RegisterOps();
  if (rc == DDI_OK) g_ready = true;
  return rc;
}

extern "C" int ddi_tflm_classify(const uint8_t* image, int32_t cost_kind, double budget, const double* thresholds,
                                 ddi_result* result) {
  static ddi_state state;  // static: keeps ~1 KB off the stack
  int8_t logits[DDI_MAX_CLASSES_TFLM];
  if (image == nullptr || result == nullptr) return DDI_ERR_ARG;
  if (!g_ready) {
    int rc = ddi_tflm_init();
    if (rc != DDI_OK) return rc;
  }
  int rc = ddi_begin(&state, &ddi_model_table, cost_kind, budget, thresholds);
  if (rc != DDI_OK) return rc;
  if (g_defer_exits) {
    rc = ddi_set_defer_exits(&state, 1);
    if (rc != DDI_OK) return rc;
  }
  // The stem's input: int8 = uint8 - 128 (the export's input quantisation: scale 1, zero point -128).
  const size_t image_bytes = 32 * 32 * 3;
  if (image_bytes > sizeof(g_activation)) return DDI_TFLM_ERR_TENSOR;
  for (size_t i = 0; i < image_bytes; ++i) g_activation[i] = static_cast<int8_t>(static_cast<int>(image[i]) - 128);
  g_activation_bytes = image_bytes;
  for (;;) {
    ddi_action a = ddi_next(&state);
    if (a.piece == DDI_DONE) break;
    if (a.piece < 0) return DDI_ERR_STATE;
#ifdef DDI_DEFER_EXITS
    if (a.keep) {  // a deferred exit: keep its input; it runs only if the sample stops before the next exit
      memcpy(g_kept, g_activation, g_activation_bytes);
      g_kept_bytes = g_activation_bytes;
      continue;
    }
    if (a.from_kept) {  // the sample stopped: the deferred exit answers from its kept input
      memcpy(g_activation, g_kept, g_kept_bytes);
      g_activation_bytes = g_kept_bytes;
    }
#else
    if (a.keep || a.from_kept) return DDI_ERR_STATE;
#endif
    if (a.identity) continue;  // identity skip: the activation passes on unchanged
    int32_t n = 0;
    rc = RunPiece(a, logits, static_cast<int32_t>(sizeof(logits)), &n);
    if (rc != DDI_OK) return rc;
    if (a.kind == DDI_GATE) rc = ddi_report_gate(&state, logits, n);
    if (a.kind == DDI_EXIT) rc = ddi_report_exit(&state, logits, n);
    if (rc != DDI_OK) return rc;
  }
  *result = ddi_get_result(&state);
  return DDI_OK;
}

extern "C" int ddi_tflm_set_defer_exits(int32_t on) {
#ifdef DDI_DEFER_EXITS
  g_defer_exits = on != 0;
  return DDI_OK;
#else
  g_defer_exits = false;
  return on ? DDI_ERR_ARG : DDI_OK;
#endif
}

extern "C" size_t ddi_tflm_max_arena_used(void) { return g_max_arena_used; }
