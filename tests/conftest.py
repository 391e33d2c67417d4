"""The test session sees two CPU devices, so that data parallelism is tested on any machine.

JAX fixes its device count at its first computation: this runs before the test modules import.
"""

from rnnkit.parallel import use_cpu_cores

use_cpu_cores(2)
