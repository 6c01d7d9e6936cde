"""Distillation: the main job's GPT trained alone against distilled from a 4.4x larger teacher.

    lmlab experiment experiments/distillation.py [--scale tiny]

The teacher (configs/gpt_shakespeare_teacher.py: 6 layers, d_model 256, 5.8M parameters, 3,000
steps of 16 x 128 tokens) is trained once, at runs/experiments/distillation/teacher, before the
students; its row is in the table. Students have the main job's shape (configs/gpt_shakespeare.py,
1.3M parameters) but a budget of 1,000 steps, not 2,900, so that the ten student runs fit a CPU
session; alone is the same 1,000 steps without a teacher. Distilled students mix
(1 - alpha) x cross-entropy + alpha x T^2 x KL(teacher_T || student_T) over alpha 0.5 / 0.9 and
temperature T 1 / 2. Held-out bits per byte decide; `eval/distill/kl` is the held-out KL to the
teacher at each run's own temperature (not comparable across T).
"""

from lmlab.experiment import TINY, Experiment
from lmlab.experiment import plots


def distilled(alpha: float, temperature: float) -> dict:
    return {"distill.teacher": "{teacher}", "distill.alpha": alpha, "distill.temperature": temperature}


EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Students train 1,000 steps (the main job: 2,900) to fit a CPU session. Anchor: Hinton et al.
2015 (soft targets scaled by T^2; on MNIST and speech, a distilled small model recovers most of
the gap to the large one). Here the corpus is small and the student is not far below the teacher
in held-out loss at equal steps, so the gain may be small.""",
    base="configs/gpt_shakespeare.py",
    requires={"teacher": "configs/gpt_shakespeare_teacher.py"},
    common={"train.steps": 1000},
    variants=[
        ("alone", {}),
        ("a0.5-T1", distilled(0.5, 1.0)),
        ("a0.5-T2", distilled(0.5, 2.0)),
        ("a0.9-T1", distilled(0.9, 1.0)),
        ("a0.9-T2", distilled(0.9, 2.0)),
    ],
    seeds=2,
    tiny=TINY,
    # The tiny teacher is still larger than the tiny student (d_model 32, one layer).
    tiny_variants={"teacher": {"model.n_layers": 2, "model.d_model": 64, "model.d_ff": 128}},
    eval_metrics=("eval/distill/kl",),
    table=("val_bpb", "eval/distill/kl", "params"),
    plot=plots.per_variant(("val_bpb",)),
)
