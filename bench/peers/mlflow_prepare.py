"""Save the benchmark's models in MLflow's format (run with the MLflow environment's Python).

    python bench/peers/mlflow_prepare.py --kind sklearn|tensorflow --model PATH --out DIR
"""

from __future__ import annotations

import argparse
import os
import shutil

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    import mlflow.pyfunc

    if args.kind == "sklearn":
        import joblib
        import mlflow.sklearn

        mlflow.sklearn.save_model(joblib.load(os.path.join(args.model, "model.joblib")), args.out)
    else:
        here = os.path.dirname(os.path.abspath(__file__))
        mlflow.pyfunc.save_model(args.out, python_model=os.path.join(here, "mlflow_tf_model.py"),
                                 artifacts={"saved_model": args.model})
