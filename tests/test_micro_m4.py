"""micro/: the C core's unit tests cross-compiled for a Cortex-M4 and run in QEMU (`make -C micro test-m4`)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

MICRO = Path(__file__).resolve().parents[1] / "micro"
ARM_CC = "arm-none-eabi-gcc"
QEMU = "qemu-system-arm"
INSTALL = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
# The multilib of micro/Makefile's ARM_CFLAGS: librdimon.a (semihosting) comes with newlib.
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
COUNT = re.compile(r"test_sched: (\d+) checks, (\d+) failures")


def _make(*args):
    return subprocess.run(["make", "-s", "-C", str(MICRO), *args], capture_output=True, text=True, timeout=240)


def _skip_without_tools():
    for tool in (ARM_CC, QEMU):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed ({INSTALL})")
    lib = subprocess.run([ARM_CC, *M4_FLAGS, "-print-file-name=librdimon.a"], capture_output=True, text=True,
                         timeout=60).stdout.strip()
    if not Path(lib).is_file():
        pytest.skip(f"newlib for {ARM_CC} (librdimon.a) is not installed ({INSTALL})")


def test_unit_tests_pass_on_an_emulated_cortex_m4():
    _skip_without_tools()
    r = _make("test-m4")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    m4 = COUNT.search(r.stdout)
    assert m4 is not None, out
    assert int(m4.group(1)) > 0 and m4.group(2) == "0", out
    # the same tests as on the host: as many checks ran
    host = _make("test")
    assert host.returncode == 0, host.stdout + host.stderr
    assert COUNT.search(host.stdout).group(1) == m4.group(1), (host.stdout, r.stdout)
