/* Host check of a generated model table (`make -C micro table GEN=micro/generated/<name>`): prints every
 * option's numbers and an FNV-1a hash of its model array, one line each, for tests/test_micro.py to compare
 * with the manifest and the .tflite files. Also checks ddi_reserves() against the exported reserves. */
#include <stdio.h>

#include "ddi_model_table.h"

static unsigned long fnv1a(const unsigned char *p, unsigned long n) {
  unsigned long h = 2166136261ul, i;
  for (i = 0; i < n; ++i) h = ((h ^ p[i]) * 16777619ul) & 0xfffffffful;
  return h;
}

int main(void) {
  const ddi_model *m = &ddi_model_table;
  double r[DDI_MAX_PIECES];
  int i, k, bad = 0;
  printf("model pieces=%d exits=%d classes=%d arena=%lu boundary=%lu\n", (int)m->num_pieces, (int)m->num_exits,
         (int)m->num_classes, (unsigned long)m->arena_bytes, (unsigned long)m->max_boundary_bytes);
  for (i = 0; i < m->num_pieces; ++i) {
    const ddi_piece *p = &m->pieces[i];
    for (k = 0; k < p->num_options; ++k) {
      const ddi_option *o = &p->options[k];
      if (((unsigned long)(size_t)o->model) % 16u != 0) bad = 1;
      printf("option %s %s kind=%d identity=%d len=%lu fnv=%08lx arena=%lu macs=%.17g energy=%.17g\n", p->name,
             o->name, (int)p->kind, (int)o->identity, (unsigned long)o->model_len,
             o->model ? fnv1a(o->model, o->model_len) : 0ul, (unsigned long)o->arena_bytes, o->macs, o->energy_uj);
    }
  }
  if (m->reserves_macs != NULL && ddi_reserves(m, DDI_COST_MACS, r) == DDI_OK)
    for (i = 0; i < m->num_pieces; ++i)
      if (r[i] != m->reserves_macs[i]) {
        printf("reserve_mismatch macs piece=%d computed=%.17g exported=%.17g\n", i, r[i], m->reserves_macs[i]);
        bad = 1;
      }
  if (m->reserves_energy_uj != NULL && ddi_reserves(m, DDI_COST_ENERGY_UJ, r) == DDI_OK)
    for (i = 0; i < m->num_pieces; ++i)
      if (r[i] != m->reserves_energy_uj[i]) {
        printf("reserve_mismatch energy piece=%d computed=%.17g exported=%.17g\n", i, r[i], m->reserves_energy_uj[i]);
        bad = 1;
      }
  printf(bad ? "FAIL\n" : "OK\n");
  return bad;
}
