"""The MLflow pyfunc flavour of a DisentTalk bundle (kept apart so the CLI does not import mlflow)."""

from __future__ import annotations

import mlflow.pyfunc

from disenttalk.constants import SAMPLE_RATE


class DisentTalkPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: rows of ``audio`` (float samples) + ``sample_rate`` → expression/pose motion."""

    def load_context(self, context):
        import os

        from disenttalk.generate import Generator

        # DISENTTALK_DEVICE: auto (CUDA when visible) | cpu | cuda[:N]
        self.generator = Generator.from_bundle(context.artifacts["bundle"],
                                               device=os.environ.get("DISENTTALK_DEVICE", "auto"))

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        params = dict(params or {})
        rows = model_input.to_dict("records") if isinstance(model_input, pd.DataFrame) else list(model_input)
        out = []
        for row in rows:
            audio = np.asarray(row["audio"], dtype=np.float32)
            motion = self.generator.motion(
                audio,
                int(row.get("sample_rate", SAMPLE_RATE)),
                steps=int(params["steps"]) if params.get("steps") else None,  # default DDIM-10
                guidance=params.get("guidance"),
                seed=int(params.get("seed", 0)),
            )
            out.append(
                {
                    "expression": motion.expression.tolist(),
                    "pose": motion.pose.tolist(),
                    "fps": float(motion.fps),
                }
            )
        return out
