/*
 * ddi_sched.c: the DDI scheduler's decision core (see ddi_sched.h). Plain C99, no dynamic memory,
 * no TFLM. Floating-point sums are done in the same order as tflite/ddi_runtime/scheduler.py so that
 * budget decisions match the Python scheduler bit for bit. Build with -ffp-contract=off (no FMA
 * contraction) for that guarantee.
 */
#include "ddi_sched.h"

#include <math.h>
#include <stddef.h>

double ddi_option_cost(const ddi_option *o, int32_t cost_kind) {
  switch (cost_kind) {
    case DDI_COST_MACS: return o->macs;
    case DDI_COST_ENERGY_UJ: return o->energy_uj;
    case DDI_COST_LATENCY_US: return o->latency_us;
    default: return NAN;
  }
}

static int valid_kind(int32_t cost_kind) {
  return cost_kind == DDI_COST_MACS || cost_kind == DDI_COST_ENERGY_UJ || cost_kind == DDI_COST_LATENCY_US;
}

static int valid_model(const ddi_model *m) {
  int32_t i;
  if (m == NULL || m->pieces == NULL || m->num_pieces <= 0 || m->num_pieces > DDI_MAX_PIECES) return 0;
  for (i = 0; i < m->num_pieces; ++i) {
    const ddi_piece *p = &m->pieces[i];
    if (p->options == NULL || p->num_options <= 0) return 0;
    if (p->kind < DDI_FIXED || p->kind > DDI_EXIT) return 0;
  }
  return 1;
}

/* min() over a piece's option costs, in list order like Python's min(). */
static double min_cost(const ddi_piece *p, int32_t cost_kind) {
  int32_t k;
  double best = ddi_option_cost(&p->options[0], cost_kind);
  for (k = 1; k < p->num_options; ++k) {
    double c = ddi_option_cost(&p->options[k], cost_kind);
    if (c < best) best = c;
  }
  return best;
}

int ddi_reserves(const ddi_model *m, int32_t cost_kind, double *out) {
  int32_t i;
  double from_next = 0.0;
  if (!valid_model(m) || !valid_kind(cost_kind) || out == NULL) return DDI_ERR_ARG;
  for (i = m->num_pieces - 1; i >= 0; --i) {
    int is_exit = m->pieces[i].kind == DDI_EXIT;
    out[i] = is_exit ? 0.0 : from_next;
    from_next = min_cost(&m->pieces[i], cost_kind) + (is_exit ? 0.0 : from_next);
  }
  return DDI_OK;
}

/* The least budget with which the cheapest path reaches the first exit: the maximum over the pieces up to it of
 * (spent + min cost) + reserve, the sums the halting rule in ddi_next makes (with fractional costs they differ in
 * the last bit; with MACs all are equal). */
int ddi_cheapest_answer(const ddi_model *m, int32_t cost_kind, double *out) {
  int32_t i;
  double spent = 0.0, least = 0.0;
  double reserves[DDI_MAX_PIECES];
  int rc = ddi_reserves(m, cost_kind, reserves);
  if (rc != DDI_OK || out == NULL) return DDI_ERR_ARG;
  for (i = 0; i < m->num_pieces; ++i) {
    double c = min_cost(&m->pieces[i], cost_kind);
    double v = spent + c + reserves[i];
    if (v > least) least = v;
    spent += c;
    if (m->pieces[i].kind == DDI_EXIT) {
      *out = least;
      return DDI_OK;
    }
  }
  return DDI_ERR_NO_EXIT;
}

int ddi_begin(ddi_state *s, const ddi_model *m, int32_t cost_kind, double budget, const double *thresholds) {
  double cheapest = 0.0;
  int rc;
  if (s == NULL) return DDI_ERR_ARG;
  s->model = NULL; /* unusable until fully initialised */
  s->pending = -1;
  s->done = 1;
  rc = ddi_cheapest_answer(m, cost_kind, &cheapest);
  if (rc != DDI_OK) return rc;
  if (!(budget > 0.0)) return DDI_ERR_BAD_BUDGET; /* NaN compares false: refused, never "no budget" */
  if (!(budget >= cheapest)) return DDI_ERR_BUDGET;
  rc = ddi_reserves(m, cost_kind, s->reserves);
  if (rc != DDI_OK) return rc;
  s->cost_kind = cost_kind;
  s->budget = budget;
  s->spent = 0.0;
  s->macs = 0.0;
  s->next = 0;
  s->gate_option = -1;
  s->exit_j = 0;
  s->pending = -1;
  s->halted = 0;
  s->pred = -1;
  s->exit = -1;
  s->num_decisions = 0;
  s->thresholds = thresholds;
  s->defer_exits = 0;
  s->deferred = -1;
  s->deferred_j = -1;
  s->held = 0.0;
  s->done = 0;
  s->model = m;
  return DDI_OK;
}

int ddi_set_defer_exits(ddi_state *s, int32_t on) {
  if (s == NULL || s->model == NULL || s->next != 0 || s->done) return DDI_ERR_STATE;
  s->defer_exits = on ? 1 : 0;
  return DDI_OK;
}

static ddi_action done_action(int32_t code) {
  ddi_action a;
  a.piece = code;
  a.option = -1;
  a.kind = -1;
  a.identity = 1;
  a.model = NULL;
  a.model_len = 0;
  a.keep = 0;
  a.from_kept = 0;
  return a;
}

/* The action for exit piece `piece` (option 0): kept for later (keep) or run on the kept tensor (from_kept). */
static ddi_action exit_action(const ddi_state *s, int32_t piece, int32_t keep, int32_t from_kept) {
  const ddi_option *o = &s->model->pieces[piece].options[0];
  ddi_action a;
  a.piece = piece;
  a.option = 0;
  a.kind = DDI_EXIT;
  a.identity = 0;
  a.model = o->model;
  a.model_len = o->model_len;
  a.keep = keep;
  a.from_kept = from_kept;
  return a;
}

/* The sample stops here: it is done, unless an exit is deferred, which then answers from the kept tensor. */
static ddi_action halt(ddi_state *s) {
  ddi_action a;
  s->halted = 1;
  s->done = 1;
  if (s->deferred < 0) return done_action(DDI_DONE);
  a = exit_action(s, s->deferred, 0, 1);
  s->spent += s->held;
  s->macs += s->model->pieces[s->deferred].options[0].macs;
  s->pending = s->deferred;
  s->exit_j = s->deferred_j;
  s->deferred = -1;
  s->held = 0.0;
  return a;
}

ddi_action ddi_next(ddi_state *s) {
  const ddi_model *m;
  const ddi_piece *p;
  const ddi_option *o;
  double reserve, need;
  int32_t k;
  ddi_action a;
  if (s == NULL || s->model == NULL || s->pending >= 0) return done_action(DDI_MISUSE);
  if (s->done) return done_action(DDI_DONE);
  m = s->model;
  if (s->next >= m->num_pieces) {
    s->done = 1;
    return done_action(DDI_DONE);
  }
  p = &m->pieces[s->next];
  reserve = s->reserves[s->next];
  /* what must stay affordable after this piece: the way on to the next exit, and a deferred exit's cost
   * (an exit that runs supersedes the deferred one) */
  need = p->kind == DDI_EXIT ? reserve : (s->held <= reserve ? reserve : s->held);
  a.keep = 0;
  a.from_kept = 0;
  if (s->spent + min_cost(p, s->cost_kind) + need > s->budget) return halt(s);
  if (p->kind == DDI_BLOCK) {
    int32_t chosen;
    k = s->gate_option < 0 ? p->num_options - 1 : s->gate_option;
    if (k >= p->num_options) k = p->num_options - 1; /* a gate with more outputs than options: widest */
    chosen = k;
    while (k > 0 && s->spent + ddi_option_cost(&p->options[k], s->cost_kind) + need > s->budget) --k;
    if (s->deferred >= 0 && k == 0 && chosen > 0) return halt(s);
    o = &p->options[k];
    s->spent += ddi_option_cost(o, s->cost_kind);
    s->macs += o->macs;
    if (s->gate_option >= 0 && s->num_decisions < DDI_MAX_PIECES) s->decisions[s->num_decisions++] = k;
    s->gate_option = -1;
  } else {
    k = 0;
    o = &p->options[0];
    if (p->kind == DDI_EXIT) {
      s->deferred = -1; /* superseded */
      s->held = 0.0;
      if (s->defer_exits && (s->thresholds == NULL || s->thresholds[s->exit_j] > 1.0) &&
          s->next + 1 < m->num_pieces &&
          s->spent + (min_cost(&m->pieces[s->next + 1], s->cost_kind) + s->reserves[s->next + 1]) <= s->budget) {
        s->deferred = s->next;
        s->deferred_j = s->exit_j;
        s->held = ddi_option_cost(o, s->cost_kind);
        s->exit_j += 1;
        a = exit_action(s, s->next, 1, 0);
        s->next += 1;
        return a;
      }
    }
    s->macs += o->macs;
    s->spent += ddi_option_cost(o, s->cost_kind);
    if (p->kind == DDI_GATE || p->kind == DDI_EXIT) s->pending = s->next;
  }
  a.piece = s->next;
  a.option = k;
  a.kind = p->kind;
  a.identity = o->identity ? 1 : 0;
  a.model = o->model;
  a.model_len = o->model_len;
  s->next += 1;
  return a;
}

int32_t ddi_argmax_i8(const int8_t *v, int32_t n) {
  int32_t i, best = 0;
  if (v == NULL || n <= 0) return -1;
  for (i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

int32_t ddi_gate_choice_i8(const int8_t *v, int32_t n) {
  int32_t i, best = 0;
  if (v == NULL || n <= 0) return -1;
  for (i = 1; i < n; ++i)
    if (v[i] >= v[best]) best = i;
  return best;
}

/* numpy's float64 pairwise summation (numpy/_core/src/umath/loops_utils.h.src), for bit-equal sums. */
static double pairwise_sum(const double *a, int32_t n) {
  if (n < 8) {
    int32_t i;
    double res = 0.;
    for (i = 0; i < n; ++i) res += a[i];
    return res;
  } else if (n <= 128) {
    double r[8], res;
    int32_t i, j;
    for (j = 0; j < 8; ++j) r[j] = a[j];
    for (i = 8; i < n - (n % 8); i += 8)
      for (j = 0; j < 8; ++j) r[j] += a[i + j];
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  } else {
    int32_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
  }
}

#ifndef DDI_MAX_CLASSES
#define DDI_MAX_CLASSES 128 /* logits per exit handled by ddi_confidence (stack: 8 bytes each) */
#endif

double ddi_confidence(const int8_t *logits, int32_t n, double scale, int32_t zero_point) {
  double z[DDI_MAX_CLASSES];
  double zmax, emax;
  int32_t i;
  if (logits == NULL || n <= 0 || n > DDI_MAX_CLASSES) return NAN;
  for (i = 0; i < n; ++i) z[i] = ((double)logits[i] - (double)zero_point) * scale;
  zmax = z[0];
  for (i = 1; i < n; ++i)
    if (z[i] > zmax) zmax = z[i];
  emax = 0.0;
  for (i = 0; i < n; ++i) {
    z[i] = exp(z[i] - zmax);
    if (i == 0 || z[i] > emax) emax = z[i];
  }
  return emax / pairwise_sum(z, n);
}

int ddi_report_gate(ddi_state *s, const int8_t *logits, int32_t n) {
  if (s == NULL || s->pending < 0 || s->model->pieces[s->pending].kind != DDI_GATE) return DDI_ERR_STATE;
  if (logits == NULL || n <= 0) return DDI_ERR_LOGITS;
  s->gate_option = ddi_gate_choice_i8(logits, n);
  s->pending = -1;
  return DDI_OK;
}

int ddi_report_exit(ddi_state *s, const int8_t *logits, int32_t n) {
  const ddi_option *o;
  if (s == NULL || s->pending < 0 || s->model->pieces[s->pending].kind != DDI_EXIT) return DDI_ERR_STATE;
  if (logits == NULL || n <= 0) return DDI_ERR_LOGITS;
  o = &s->model->pieces[s->pending].options[0];
  s->exit = s->exit_j;
  s->pred = ddi_argmax_i8(logits, n);
  s->pending = -1;
  if (s->thresholds != NULL && ddi_confidence(logits, n, o->out_scale, o->out_zero_point) >= s->thresholds[s->exit_j]) {
    s->done = 1;
    return DDI_OK;
  }
  s->exit_j += 1;
  return DDI_OK;
}

ddi_result ddi_get_result(const ddi_state *s) {
  ddi_result r;
  r.pred = s->pred;
  r.exit = s->exit;
  r.halted = s->halted;
  r.num_decisions = s->num_decisions;
  r.spent = s->spent;
  r.macs = s->macs;
  return r;
}

int32_t ddi_decision(const ddi_state *s, int32_t i) {
  if (s == NULL || i < 0 || i >= s->num_decisions) return -1;
  return s->decisions[i];
}

uint32_t ddi_sizeof(int32_t what) {
  switch (what) {
    case 0: return (uint32_t)sizeof(ddi_state);
    case 1: return (uint32_t)sizeof(ddi_model);
    case 2: return (uint32_t)sizeof(ddi_piece);
    case 3: return (uint32_t)sizeof(ddi_option);
    case 4: return (uint32_t)sizeof(ddi_quant);
    case 5: return (uint32_t)sizeof(ddi_action);
    case 6: return (uint32_t)sizeof(ddi_result);
    default: return 0;
  }
}
