"""Train the student on the curated dataset with Axolotl (DeepSpeed ZeRO 1/2/3 or FSDP), and card it.

    from distillflow.train import prepare, train
    plan = prepare("runs/qa")             # export + render + validate + preflight (writes runs/qa/train/)
    result = train("runs/qa")             # ... then `axolotl preprocess` + `axolotl train` + model card

Axolotl and DeepSpeed are imported lazily, inside the functions that validate; importing this
package costs nothing.
"""

from distillflow.train.plan import Preflight, TrainPlan, prepare
from distillflow.train.run import TrainResult, launch, train

__all__ = ["prepare", "train", "launch", "TrainPlan", "TrainResult", "Preflight"]
