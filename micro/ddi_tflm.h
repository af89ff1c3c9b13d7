/*
 * ddi_tflm: runs a generated DDI model on a microcontroller with TensorFlow Lite Micro.
 *
 * Built with a TFLM checkout (github.com/tensorflow/tflite-micro), not in this repository's CI: see the
 * comment at the top of ddi_tflm.cc and BUILD.md. The decisions come from the plain-C core ddi_sched.c;
 * this layer only runs the piece options it chooses, one TFLM interpreter at a time in one shared arena.
 */
#ifndef DDI_TFLM_H_
#define DDI_TFLM_H_

#include <stddef.h>
#include <stdint.h>

#include "ddi_sched.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes beyond ddi_sched.h's. */
enum {
  DDI_TFLM_ERR_SCHEMA = -20,   /* a model array has the wrong flatbuffer schema version */
  DDI_TFLM_ERR_ALLOC = -21,    /* AllocateTensors failed: arena too small or an op missing from the resolver */
  DDI_TFLM_ERR_INVOKE = -22,   /* Invoke failed */
  DDI_TFLM_ERR_TENSOR = -23,   /* input/output tensor not int8 or not the expected size */
  DDI_TFLM_ERR_RESOLVER = -24  /* registering an op failed */
};

/* Registers the ops (generated ddi_ops.h) once. Call before ddi_tflm_classify. */
int ddi_tflm_init(void);

/* Classifies one image (32x32x3 uint8, HWC) within `budget` (in `cost_kind` units; INFINITY: no budget), stopping
 * early at an exit whose confidence reaches thresholds[exit] (NULL: never early). Fills *result. Returns DDI_OK or
 * an error (ddi_begin's: DDI_ERR_BAD_BUDGET for a NaN, zero or negative budget, DDI_ERR_BUDGET below the cheapest
 * answer). */
int ddi_tflm_classify(const uint8_t *image, int32_t cost_kind, double budget, const double *thresholds,
                      ddi_result *result);

/* Deferred exits for the following ddi_tflm_classify calls (see ddi_set_defer_exits in ddi_sched.h): better
 * answers under binding budgets and fewer exit heads run. Needs -DDDI_DEFER_EXITS, which adds a second boundary
 * buffer of DDI_MAX_BOUNDARY_BYTES; without it, turning them on returns DDI_ERR_ARG. */
int ddi_tflm_set_defer_exits(int32_t on);

/* Largest arena_used_bytes() seen so far (check it against DDI_ARENA_BYTES on the target: optimised kernels
 * such as CMSIS-NN may need more scratch than the reference kernels used to measure the table). */
size_t ddi_tflm_max_arena_used(void);

#ifdef __cplusplus
}
#endif

#endif /* DDI_TFLM_H_ */
