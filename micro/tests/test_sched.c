/* Host unit tests of the DDI decision core (ddi_sched.c). Built and run by `make -C micro test`.
 * A tiny harness: CHECK() records failures and the process exits non-zero if any check failed. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ddi_sched.h"

static int g_checks = 0, g_failures = 0;

#define CHECK(cond)                                                       \
  do {                                                                    \
    ++g_checks;                                                           \
    if (!(cond)) {                                                        \
      ++g_failures;                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                     \
  } while (0)

static const unsigned char kFakeModel[4] = {1, 2, 3, 4};

#define OPT(nm, ident, m, e) {nm, (ident) ? NULL : kFakeModel, (ident) ? 0u : 4u, 0u, ident, 0, 0, 3, 0.1, 0, m, e, 0.0}
#define EXIT_OPT(m) {"run", kFakeModel, 4u, 0u, 0, 0, -1, 4, 0.5, 0, m, 1.0, 0.0}

/* stem, gate0, block0 (identity skip, w1, w2), exit0, gate1, block1 (conv skip, w1, w2), exit1 */
static const ddi_option o_stem[] = {OPT("run", 0, 100.0, 1.0)};
static const ddi_option o_gate[] = {OPT("run", 0, 1.0, 0.5)};
static const ddi_option o_block0[] = {OPT("skip", 1, 0.0, 0.0), OPT("w1", 0, 200.0, 2.0), OPT("w2", 0, 400.0, 4.0)};
static const ddi_option o_exit0[] = {EXIT_OPT(50.0)};
static const ddi_option o_block1[] = {OPT("skip", 0, 20.0, 0.2), OPT("w1", 0, 150.0, 1.5), OPT("w2", 0, 300.0, 3.0)};
static const ddi_option o_exit1[] = {EXIT_OPT(10.0)};

static const ddi_piece g_pieces[] = {
    {"stem", DDI_FIXED, 0, 1, o_stem},   {"gate0", DDI_GATE, 0, 1, o_gate},   {"block0", DDI_BLOCK, 0, 3, o_block0},
    {"exit0", DDI_EXIT, 0, 1, o_exit0},  {"gate1", DDI_GATE, 1, 1, o_gate},   {"block1", DDI_BLOCK, 1, 3, o_block1},
    {"exit1", DDI_EXIT, 1, 1, o_exit1},
};
static const ddi_quant g_edges[] = {{"image", 1.0, -128}};
static const ddi_model g_model = {7, 2, 4, 1, g_pieces, g_edges, NULL, NULL, 0, NULL, NULL, 0u, 0u};

/* Logits whose argmax is `k` (n outputs). */
static void onehot(int8_t *v, int n, int k) {
  int i;
  for (i = 0; i < n; ++i) v[i] = (int8_t)(i == k ? 100 : -100);
}

typedef struct {
  int ran[16][2]; /* piece, option */
  int identity[16];
  int n;
  ddi_result r;
  int rc;
} trace;

/* Runs one sample: gates answer gate_choice[g], exits answer with exit_logits[j] (4 values each). */
static trace run(double budget, int32_t kind, const int *gate_choice, const int8_t exit_logits[][4],
                 const double *thresholds) {
  trace t;
  ddi_state s;
  int gi = 0, ei = 0;
  memset(&t, 0, sizeof t);
  t.rc = ddi_begin(&s, &g_model, kind, budget, thresholds);
  if (t.rc != DDI_OK) return t;
  for (;;) {
    ddi_action a = ddi_next(&s);
    if (a.piece == DDI_DONE) break;
    if (a.piece < 0 || t.n >= 16) {
      t.rc = -100;
      return t;
    }
    t.ran[t.n][0] = a.piece;
    t.ran[t.n][1] = a.option;
    t.identity[t.n] = a.identity;
    t.n++;
    if (a.kind == DDI_GATE) {
      int8_t g[3];
      onehot(g, 3, gate_choice[gi++]);
      CHECK(ddi_report_gate(&s, g, 3) == DDI_OK);
    } else if (a.kind == DDI_EXIT) {
      CHECK(ddi_report_exit(&s, exit_logits[ei++], 4) == DDI_OK);
    }
  }
  t.r = ddi_get_result(&s);
  return t;
}

static const int8_t kFlat[2][4] = {{0, 0, 0, 1}, {0, 2, 0, 0}};     /* low confidence */
static const int8_t kSure[2][4] = {{0, 100, 0, 0}, {0, 0, 100, 0}}; /* high confidence (scale 0.5) */

static void test_reserves(void) {
  double r[7], cheapest;
  CHECK(ddi_reserves(&g_model, DDI_COST_MACS, r) == DDI_OK);
  /* stem -> gate0 (1) + block0 min (0) + exit0 (50) = 51 */
  CHECK(r[0] == 51.0 && r[1] == 50.0 && r[2] == 50.0 && r[3] == 0.0);
  CHECK(r[4] == 30.0 && r[5] == 10.0 && r[6] == 0.0);
  CHECK(ddi_cheapest_answer(&g_model, DDI_COST_MACS, &cheapest) == DDI_OK && cheapest == 151.0);
  CHECK(ddi_cheapest_answer(&g_model, DDI_COST_ENERGY_UJ, &cheapest) == DDI_OK && cheapest == 2.5);
  CHECK(ddi_reserves(&g_model, 7, r) == DDI_ERR_ARG);
}

static void test_unlimited_runs_gate_choices(void) {
  int gates[2] = {2, 1};
  trace t = run(INFINITY, DDI_COST_MACS, gates, kFlat, NULL);
  CHECK(t.rc == DDI_OK);
  CHECK(t.n == 7);
  CHECK(t.ran[2][0] == 2 && t.ran[2][1] == 2);
  CHECK(t.ran[5][0] == 5 && t.ran[5][1] == 1);
  CHECK(t.r.exit == 1 && t.r.pred == 1 && !t.r.halted);
  CHECK(t.r.spent == 100.0 + 1.0 + 400.0 + 50.0 + 1.0 + 150.0 + 10.0);
  CHECK(t.r.macs == t.r.spent);
  CHECK(t.r.num_decisions == 2);
}

static void test_identity_skip(void) {
  int gates[2] = {0, 0};
  trace t = run(INFINITY, DDI_COST_MACS, gates, kFlat, NULL);
  CHECK(t.rc == DDI_OK && t.n == 7);
  CHECK(t.ran[2][1] == 0 && t.identity[2] == 1);  /* identity: nothing to run */
  CHECK(t.ran[5][1] == 0 && t.identity[5] == 0);  /* block1's skip is a real (projection) model */
  CHECK(t.r.spent == 100.0 + 1.0 + 0.0 + 50.0 + 1.0 + 20.0 + 10.0);
}

static void test_downgrade(void) {
  int gates[2] = {2, 2};
  /* stem 100 + gate 1 = 101; block0 w2 needs 101+400+50 = 551 > 400; w1: 101+200+50 = 351 <= 400 */
  trace t = run(400.0, DDI_COST_MACS, gates, kFlat, NULL);
  CHECK(t.rc == DDI_OK);
  CHECK(t.ran[2][1] == 1);
  CHECK(t.r.spent <= 400.0);
  /* after exit0 spent = 351; gate1 check 351+1+30 = 382 <= 400; block1: w2/w1 too big, skip 352+20+10 fits */
  CHECK(t.n == 7 && t.ran[5][1] == 0);
  CHECK(t.r.exit == 1 && !t.r.halted);
}

static void test_halt(void) {
  int gates[2] = {2, 2};
  /* exactly the cheapest answer: stem, gate0, skip, exit0 and then halt before gate1 */
  trace t = run(151.0, DDI_COST_MACS, gates, kFlat, NULL);
  CHECK(t.rc == DDI_OK);
  CHECK(t.n == 4 && t.ran[2][1] == 0);
  CHECK(t.r.halted == 1 && t.r.exit == 0 && t.r.pred == 3);
  CHECK(t.r.spent == 151.0);
}

static void test_never_over_budget(void) {
  int b, g0, g1, ok = 1;
  for (b = 151; b <= 1100; b += 7) {
    for (g0 = 0; g0 < 3; ++g0) {
      for (g1 = 0; g1 < 3; ++g1) {
        int gates[2];
        trace t;
        gates[0] = g0;
        gates[1] = g1;
        t = run((double)b, DDI_COST_MACS, gates, kFlat, NULL);
        if (t.rc != DDI_OK || t.r.spent > (double)b || t.r.exit < 0) ok = 0;
        /* halted only when the next piece cannot fit */
        if (t.r.halted && t.r.exit != 0) ok = 0;
      }
    }
  }
  CHECK(ok);
}

static void test_budget_below_cheapest(void) {
  int gates[2] = {0, 0};
  trace t = run(150.999, DDI_COST_MACS, gates, kFlat, NULL);
  CHECK(t.rc == DDI_ERR_BUDGET);
  t = run(INFINITY, DDI_COST_MACS, gates, kFlat, NULL); /* no budget */
  CHECK(t.rc == DDI_OK && !t.r.halted);
  t = run(2.4, DDI_COST_ENERGY_UJ, gates, kFlat, NULL);
  CHECK(t.rc == DDI_ERR_BUDGET);
  t = run(2.5, DDI_COST_ENERGY_UJ, gates, kFlat, NULL);
  CHECK(t.rc == DDI_OK && t.r.exit == 0 && t.r.halted);
}

/* NaN, zero, negative and -inf are not budgets, whatever the costs: even where the cheapest answer costs 0
 * (latency_us is 0 in a table generated without a latency table), they are refused, never read as "no budget". */
static void test_bad_budget_values(void) {
  int gates[2] = {0, 0};
  const double bad[] = {NAN, -NAN, 0.0, -0.0, -1.0, -INFINITY};
  const int32_t kinds[] = {DDI_COST_MACS, DDI_COST_ENERGY_UJ, DDI_COST_LATENCY_US};
  size_t i, k;
  ddi_state s;
  for (k = 0; k < sizeof kinds / sizeof kinds[0]; ++k) {
    for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
      trace t = run(bad[i], kinds[k], gates, kFlat, NULL);
      CHECK(t.rc == DDI_ERR_BAD_BUDGET);
    }
    CHECK(run(INFINITY, kinds[k], gates, kFlat, NULL).rc == DDI_OK);
  }
  CHECK(ddi_begin(&s, &g_model, DDI_COST_MACS, NAN, NULL) == DDI_ERR_BAD_BUDGET);
  CHECK(ddi_next(&s).piece == DDI_MISUSE); /* a refused budget leaves the state unusable */
}

static void test_early_exit(void) {
  int gates[2] = {1, 1};
  double th[2] = {0.9, 0.9};
  trace t = run(INFINITY, DDI_COST_MACS, gates, kSure, th);
  CHECK(t.rc == DDI_OK && t.n == 4 && t.r.exit == 0 && t.r.pred == 1 && !t.r.halted);
  t = run(INFINITY, DDI_COST_MACS, gates, kFlat, th); /* not confident: runs on */
  CHECK(t.rc == DDI_OK && t.n == 7 && t.r.exit == 1);
  th[0] = 1.000000001; /* unreachable: same as no threshold */
  t = run(INFINITY, DDI_COST_MACS, gates, kSure, th);
  CHECK(t.rc == DDI_OK && t.n == 7 && t.r.exit == 1 && t.r.pred == 2);
}

static void test_argmax_confidence(void) {
  int8_t tie[4] = {5, 7, 7, -3};
  int8_t flat[4] = {3, 3, 3, 3};
  CHECK(ddi_argmax_i8(tie, 4) == 1);
  CHECK(ddi_gate_choice_i8(tie, 4) == 2);
  CHECK(fabs(ddi_confidence(flat, 4, 0.25, 3) - 0.25) < 1e-15);
  CHECK(ddi_confidence(kSure[0], 4, 0.5, 0) > 0.999);
}

static void test_misuse(void) {
  ddi_state s;
  ddi_action a;
  int8_t g[3] = {0, 0, 1};
  CHECK(ddi_begin(&s, &g_model, DDI_COST_MACS, INFINITY, NULL) == DDI_OK);
  CHECK(ddi_report_gate(&s, g, 3) == DDI_ERR_STATE); /* nothing pending */
  a = ddi_next(&s);
  CHECK(a.piece == 0 && a.kind == DDI_FIXED);
  a = ddi_next(&s);
  CHECK(a.piece == 1 && a.kind == DDI_GATE);
  a = ddi_next(&s); /* gate report missing */
  CHECK(a.piece == DDI_MISUSE);
  CHECK(ddi_report_exit(&s, (const int8_t *)g, 3) == DDI_ERR_STATE);
  CHECK(ddi_report_gate(&s, g, 3) == DDI_OK);
  a = ddi_next(&s);
  CHECK(a.piece == 2 && a.option == 2);
  CHECK(ddi_begin(&s, &g_model, 99, INFINITY, NULL) == DDI_ERR_ARG);
  a = ddi_next(&s);
  CHECK(a.piece == DDI_MISUSE);
}

/* Deferred exits: runs one sample with both gates choosing w2; records (piece, keep, from_kept) per action. */
typedef struct {
  int piece[16], keep[16], from_kept[16];
  int n;
  ddi_result r;
} dtrace;

static dtrace run_deferred(double budget, int on) {
  dtrace t;
  ddi_state s;
  int8_t g[3];
  memset(&t, 0, sizeof t);
  onehot(g, 3, 2);
  CHECK(ddi_begin(&s, &g_model, DDI_COST_MACS, budget, NULL) == DDI_OK);
  CHECK(ddi_set_defer_exits(&s, on) == DDI_OK);
  for (;;) {
    ddi_action a = ddi_next(&s);
    if (a.piece == DDI_DONE || a.piece < 0 || t.n >= 16) break;
    t.piece[t.n] = a.piece;
    t.keep[t.n] = a.keep;
    t.from_kept[t.n] = a.from_kept;
    t.n++;
    if (a.keep || a.identity) continue;
    if (a.kind == DDI_GATE) CHECK(ddi_report_gate(&s, g, 3) == DDI_OK);
    if (a.kind == DDI_EXIT) CHECK(ddi_report_exit(&s, kFlat[a.piece == 3 ? 0 : 1], 4) == DDI_OK);
  }
  t.r = ddi_get_result(&s);
  CHECK(t.r.spent <= budget);
  return t;
}

static void test_deferred_exits(void) {
  ddi_state s;
  dtrace t;
  /* a budget that does not bind: exit0 is kept, not run; only the last exit runs and is charged */
  t = run_deferred(10000.0, 1);
  CHECK(t.n == 7 && t.piece[3] == 3 && t.keep[3] == 1 && t.piece[6] == 6 && t.keep[6] == 0);
  CHECK(t.r.exit == 1 && t.r.halted == 0 && t.r.spent == 100.0 + 1.0 + 400.0 + 1.0 + 300.0 + 10.0);
  /* 600: after block0 (501) exit0 is deferred (501 + 31 <= 600) with its 50 reserved; block1 fits only as a
   * skip (502 + 20 + 50 <= 600), which its gate did not choose: the sample stops and exit0 answers */
  t = run_deferred(600.0, 1);
  CHECK(t.n == 6 && t.keep[3] == 1 && t.piece[4] == 4 && t.piece[5] == 3 && t.from_kept[5] == 1);
  CHECK(t.r.exit == 0 && t.r.halted == 1 && t.r.spent == 502.0 + 50.0 && t.r.num_decisions == 1);
  /* without deferral the same budget skips block1 to reach exit1 */
  t = run_deferred(600.0, 0);
  CHECK(t.n == 7 && t.keep[3] == 0 && t.r.exit == 1 && t.r.spent == 551.0 + 1.0 + 20.0 + 10.0);
  /* 560: block1 does not fit at all with exit0's cost held: the deferred exit answers */
  t = run_deferred(560.0, 1);
  CHECK(t.n == 6 && t.from_kept[5] == 1 && t.r.exit == 0 && t.r.spent == 552.0);
  /* deferral is set before the first piece only */
  CHECK(ddi_begin(&s, &g_model, DDI_COST_MACS, INFINITY, NULL) == DDI_OK);
  (void)ddi_next(&s);
  CHECK(ddi_set_defer_exits(&s, 1) == DDI_ERR_STATE);
}

int main(void) {
  test_reserves();
  test_unlimited_runs_gate_choices();
  test_identity_skip();
  test_downgrade();
  test_halt();
  test_never_over_budget();
  test_budget_below_cheapest();
  test_bad_budget_values();
  test_early_exit();
  test_argmax_confidence();
  test_misuse();
  test_deferred_exits();
  printf("test_sched: %d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
