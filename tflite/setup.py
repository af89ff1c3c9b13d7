"""Build of the board package with its optional C loop, ``ddi_runtime._cloop`` (everything else: pyproject.toml).

The extension compiles ``micro/ddi_sched.c`` -- the MCU's decision core, the one implementation of the budget
rule -- from the repository's ``micro/`` directory: ``ddi_runtime/_cloop.c`` includes it and this script puts
``../micro`` on the include path. Nothing is copied, so the extension builds where ``micro/`` sits next to
``tflite/`` (``pip install ./tflite`` and ``pip install -e ./tflite`` from a checkout). Built from anywhere else
(an sdist of ``tflite/`` alone), or where no C compiler works, the package installs without it and
``ddi_runtime.Scheduler`` runs its Python loop (and says so once).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
MICRO = os.path.normpath(os.path.join(HERE, "..", "micro"))
CORE = os.path.join(MICRO, "ddi_sched.c")


def _notice(why: str) -> None:
    print(f"ddi_runtime: the C loop (ddi_runtime._cloop) is not built ({why}); Scheduler uses its Python loop",
          file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a missing decision core or compiler leaves the extension out."""

    def build_extension(self, ext: Extension) -> None:
        if not os.path.exists(CORE):
            _notice(f"no decision core at {CORE}: build from a checkout that has micro/")
            return
        if self.compiler.compiler_type in ("unix", "mingw32", "cygwin"):
            # the core's floating-point sums must match the Python loop bit for bit: no FMA contraction
            ext.extra_compile_args = [*ext.extra_compile_args, "-ffp-contract=off"]
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001  (CompileError, LinkError, a missing compiler: all optional)
            _notice(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'compiler failed'}")


setup(
    ext_modules=[Extension("ddi_runtime._cloop", sources=["ddi_runtime/_cloop.c"], include_dirs=[MICRO],
                           depends=[CORE, os.path.join(MICRO, "ddi_sched.h")], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
