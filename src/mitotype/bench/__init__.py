"""Speed and memory benchmarks (``mitotype bench``, ``benchmarks/*.py``); numbers in docs/PERFORMANCE.md.

Sections, each a list of rows (dicts) that :func:`report.table` prints:

* ``e2e``: ``mitotype predict`` over the AMi-Br crops and ``mitotype challenge`` on the track-2 stack as
  users run them, each in a fresh process (start, imports, decoding, network, output), eager torch vs the
  folded torch and onnxruntime defaults; ``ms/batch`` is the whole command there; and the challenge's
  model time alone (preprocessing + network on the decoded stack, in process);
* ``inference``: the default model's classification path, PyTorch eager (NCHW, channels-last, bf16
  autocast) vs onnxruntime (fp32, int8 dynamic quantisation), batch 1/16/64/256, 1 and 2 threads;
* ``baseline``: the official challenge baseline's architecture (timm ``efficientnetv2_m``, 224 px, random
  init) against ours in the same process and setting;
* ``flops``: FLOPs per patch (``torch.utils.flop_counter``) and the fraction of this CPU's estimated peak
  that the measured speed implies;
* ``training``: forward + backward + AdamW step of single-task vs multi-task vs the paper's ResNet-50,
  patches/s and peak RSS, each in a fresh subprocess (peak RSS is per process); then the auxiliary-decoder
  settings of ``train.speed.DECODER_SETTINGS`` against single-task, back to back in one subprocess.

Every figure is the median of several timed runs after a warm-up. Comparisons are ratios of figures taken
in the same benchmark run. The machine is shared, so each row also gives patches per CPU-second (the
process's own CPU time; on a busy machine it tracks what the code would do alone better than wall time).
Weights do not change speed: without the shipped default model, the architecture comes from
``configs/cpu_mtl.yaml`` with random weights.

Modules: ``machine`` (the CPU, the load, the model timed), ``timing`` (medians, rows, timed processes),
``inference`` (the backends exactly as ``models.inference`` and ``models.onnx`` run them; int8), ``e2e``
(the commands in fresh processes), ``baseline`` (the challenge baseline, FLOPs), ``training``
(``train.speed``'s training step in fresh processes), ``report`` (the whole run and its table).
"""

from mitotype.bench.report import run_all, table

__all__ = ["run_all", "table"]
