/*
 * ddi_sched: the Dual Dynamic Inference scheduler's decision core in plain C99.
 *
 * No TFLM (or any other) dependency: it only decides which piece option runs next, accounts its cost and
 * reads the int8 logits of gates and exits that the caller reports back. It mirrors, rule for rule and
 * in the same floating-point order, Scheduler.costs() and Scheduler.run() of
 * tflite/ddi_runtime/scheduler.py:
 *
 *   - pieces run in table order; kinds FIXED (stem), GATE, BLOCK, EXIT;
 *   - before each piece the sample halts when spent + min(option costs) + reserve > budget, where the
 *     reserve is the cheapest way from the next piece on to the next exit (0 for an exit);
 *   - a gate's decision is the argmax of its int8 logits (on a tie the widest option, the last maximum);
 *   - a block runs the gate's choice (the widest option when no gate precedes it), downgraded to the
 *     widest cheaper option whose spent + cost + reserve still fits (option 0 always fits once the
 *     piece was not halted); identity options run nothing (the boundary tensor passes on);
 *   - an exit answers with the argmax of its logits and stops early when the max softmax of its
 *     dequantised logits reaches the exit's threshold.
 *
 * Typical loop (the caller owns the interpreter):
 *
 *     ddi_state s;
 *     if (ddi_begin(&s, &ddi_model_table, DDI_COST_MACS, budget, NULL) != DDI_OK) error;
 *     for (;;) {
 *       ddi_action a = ddi_next(&s);
 *       if (a.piece < 0) break;                          // DDI_DONE
 *       if (!a.identity) run a.model (a.model_len bytes) on the boundary tensor;
 *       if (a.kind == DDI_GATE) ddi_report_gate(&s, logits, n);
 *       if (a.kind == DDI_EXIT) ddi_report_exit(&s, logits, n);
 *     }
 *     ddi_result r = ddi_get_result(&s);
 */
#ifndef DDI_SCHED_H_
#define DDI_SCHED_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef DDI_MAX_PIECES
#define DDI_MAX_PIECES 64
#endif

/* Piece kinds (manifest "kind"). */
typedef enum { DDI_FIXED = 0, DDI_GATE = 1, DDI_BLOCK = 2, DDI_EXIT = 3 } ddi_kind;

/* Budget / cost kinds. LATENCY uses each option's latency_us (planned microseconds, margin included). */
typedef enum { DDI_COST_MACS = 0, DDI_COST_ENERGY_UJ = 1, DDI_COST_LATENCY_US = 2 } ddi_cost_kind;

/* Status codes. */
enum {
  DDI_OK = 0,
  DDI_ERR_ARG = -1,        /* NULL pointer, bad cost kind, bad table, too many pieces */
  DDI_ERR_BUDGET = -2,     /* budget below the cheapest way to the first exit */
  DDI_ERR_NO_EXIT = -3,    /* the table has no exit */
  DDI_ERR_STATE = -4,      /* call out of order (e.g. ddi_next while a gate/exit report is pending) */
  DDI_ERR_LOGITS = -5,     /* wrong number of logits */
  DDI_ERR_BAD_BUDGET = -6  /* budget NaN, zero or negative (-INFINITY included); INFINITY means "no budget" */
};

/* Quantisation of a boundary tensor (an "edge" between pieces). */
typedef struct ddi_quant {
  const char *name;
  double scale;
  int32_t zero_point;
} ddi_quant;

/* One option of a piece. */
typedef struct ddi_option {
  const char *name;
  const unsigned char *model; /* the option's .tflite flatbuffer; NULL for an identity option */
  uint32_t model_len;
  uint32_t arena_bytes;       /* TFLM arena measured for this option (0 for identity) */
  int32_t identity;           /* 1: nothing runs, the tensor passes on */
  int32_t input_edge;         /* index into ddi_model.edges, -1 if none */
  int32_t output_edge;        /* index into ddi_model.edges, -1 if none (gates and exits) */
  int32_t num_outputs;        /* elements of the output tensor (logits of gates/exits) */
  double out_scale;           /* output quantisation (exits: used for the softmax confidence) */
  int32_t out_zero_point;
  double macs;
  double energy_uj;
  double latency_us;          /* planned latency; 0 when no latency table was given to the generator */
} ddi_option;

typedef struct ddi_piece {
  const char *name;
  int32_t kind;               /* ddi_kind */
  int32_t index;              /* gate/block/exit number within its kind */
  int32_t num_options;
  const ddi_option *options;
} ddi_piece;

typedef struct ddi_model {
  int32_t num_pieces;
  int32_t num_exits;
  int32_t num_classes;
  int32_t num_edges;
  const ddi_piece *pieces;
  const ddi_quant *edges;
  const double *reserves_macs;      /* as exported (ddi_begin recomputes them the same way) */
  const double *reserves_energy_uj;
  int32_t num_thresholds;           /* named exit thresholds from the manifest (e.g. "0.6") */
  const char *const *threshold_names;
  const double *thresholds;
  uint32_t arena_bytes;             /* the shared arena: maximum measured + margin */
  uint32_t max_boundary_bytes;      /* the largest boundary tensor (the activation buffer between pieces) */
} ddi_model;

/* What to run next. piece == DDI_DONE (-1): done (answer in ddi_get_result); DDI_MISUSE (-2): ddi_next was
 * called out of order (a gate/exit report is pending, or the state was never begun). */
#define DDI_DONE (-1)
#define DDI_MISUSE (-2)
typedef struct ddi_action {
  int32_t piece;
  int32_t option;
  int32_t kind;
  int32_t identity;
  const unsigned char *model;
  uint32_t model_len;
  int32_t keep;      /* deferred exit (ddi_set_defer_exits): do not run it; keep a copy of the current boundary
                      * tensor, and report nothing */
  int32_t from_kept; /* run this exit on the kept tensor (the deferred exit answers), then report it */
} ddi_action;

typedef struct ddi_result {
  int32_t pred;      /* predicted class; -1 if no exit was reached */
  int32_t exit;      /* exit that answered; -1 if none */
  int32_t halted;    /* 1 if the budget stopped the sample before its last piece */
  int32_t num_decisions;
  double spent;      /* in the budget's cost kind */
  double macs;
} ddi_result;

typedef struct ddi_state {
  const ddi_model *model;
  int32_t cost_kind;
  double budget;
  double spent;
  double macs;
  int32_t next;              /* next piece */
  int32_t gate_option;       /* the pending gate choice, -1 if none */
  int32_t exit_j;            /* exits passed so far */
  int32_t pending;           /* piece awaiting a report (gate or exit), -1 if none */
  int32_t done;
  int32_t halted;
  int32_t pred;
  int32_t exit;
  int32_t num_decisions;
  int32_t decisions[DDI_MAX_PIECES]; /* option chosen for each gated block, in order */
  double reserves[DDI_MAX_PIECES];
  const double *thresholds;  /* per exit; NULL: never stop early */
  int32_t defer_exits;       /* ddi_set_defer_exits */
  int32_t deferred;          /* piece of the deferred exit, -1 if none */
  int32_t deferred_j;        /* its exit number */
  double held;               /* its cost, reserved while it is deferred */
} ddi_state;

/* Cost of one option in a cost kind. */
double ddi_option_cost(const ddi_option *o, int32_t cost_kind);

/* Cheapest way to an answer: sum of the cheapest options up to and including the first exit. */
int ddi_cheapest_answer(const ddi_model *m, int32_t cost_kind, double *out);

/* Reserves (out[num_pieces]) for a cost kind, computed as Scheduler.costs does. */
int ddi_reserves(const ddi_model *m, int32_t cost_kind, double *out);

/* Starts one sample. thresholds: one per exit (num_exits values), or NULL for "never stop early".
 * budget: positive, in cost_kind units; INFINITY means no budget. Returns DDI_ERR_BAD_BUDGET for a NaN, zero or
 * negative budget and DDI_ERR_BUDGET when the budget is below the cheapest way to the first exit; on any error
 * the state stays unusable (ddi_next returns DDI_MISUSE). */
int ddi_begin(ddi_state *s, const ddi_model *m, int32_t cost_kind, double budget, const double *thresholds);

/* Deferred exits (after ddi_begin, before the first ddi_next; ddi_begin turns them off), the rule of
 * tflite/ddi_runtime's Scheduler.run(defer_exits=True): an exit no threshold can stop at, whose answer the next
 * exit would supersede (the cheapest way on to it is affordable), is not run: ddi_next returns it with keep = 1
 * and the caller keeps a copy of the current boundary tensor (RAM: one more boundary buffer). It runs only if
 * the sample stops before the next exit (ddi_next then returns it with from_kept = 1). While it is deferred its
 * cost stays reserved, and a block the budget would cut down to its skip option although its gate chose to run
 * it stops the sample. Returns DDI_OK, or DDI_ERR_STATE when the sample has already started. */
int ddi_set_defer_exits(ddi_state *s, int32_t on);

/* The next piece option to run, or piece = -1 when the sample is done. Accounts its cost. */
ddi_action ddi_next(ddi_state *s);

/* Reports the int8 logits of the gate / exit that ddi_next just returned. */
int ddi_report_gate(ddi_state *s, const int8_t *logits, int32_t n);
int ddi_report_exit(ddi_state *s, const int8_t *logits, int32_t n);

/* Index of the first maximum (an exit's class). */
int32_t ddi_argmax_i8(const int8_t *v, int32_t n);

/* A gate's option: the index of the LAST maximum, i.e. the widest of tied options. int8 gate logits tie often
 * (about a fifth of the decisions of a trained ResNet-20 DDI model); resolving ties to the cheapest option
 * biased int8 paths toward skipping and cost accuracy. */
int32_t ddi_gate_choice_i8(const int8_t *v, int32_t n);

/* Max softmax of dequantised logits, computed as numpy does in float64 (pairwise summation). */
double ddi_confidence(const int8_t *logits, int32_t n, double scale, int32_t zero_point);

ddi_result ddi_get_result(const ddi_state *s);

/* Convenience for hosts (ctypes): the chosen option of the i-th gated block, -1 if out of range. */
int32_t ddi_decision(const ddi_state *s, int32_t i);

/* sizeof(ddi_state) etc., so bindings can check their struct layouts. */
uint32_t ddi_sizeof(int32_t what);

#ifdef __cplusplus
}
#endif

#endif /* DDI_SCHED_H_ */
