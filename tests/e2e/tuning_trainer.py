"""A small trainer for tuning tests (its source is packaged as ``trainer/task.py``).

Objective: ``(x - 0.3)**2 + n / 10 + (0.05 if kind == "b" else 0) + d / 100``, reported at steps
1..--steps (minus ``1/step`` shrinking towards it) through ``--reporter``:
``hypertune`` (the PyPI package cloudml-hypertune), ``mlengine`` (mlengine.hypertune),
``events`` (a TensorFlow event file under <job-dir>/<trial>/, written without TensorFlow),
``none`` (reports nothing). ``--crash`` exits 3; ``--bad-trial K`` makes trial K report 100
at every step, slowly (``--bad-steps`` steps of ``--bad-sleep`` s): a clearly bad curve.
Each run writes what it saw to ``--record/<trial>.json``.
"""

TRAINER = r'''
import argparse, json, os, struct, sys, time

started = time.time()
p = argparse.ArgumentParser()
p.add_argument("--job-dir")
p.add_argument("--x", type=float, default=0.5)
p.add_argument("--n", type=int, default=1)
p.add_argument("--kind", default="a")
p.add_argument("--d", type=float, default=0.0)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--reporter", default="hypertune")
p.add_argument("--crash", action="store_true")
p.add_argument("--bad-trial", default="")
p.add_argument("--bad-steps", type=int, default=60)
p.add_argument("--bad-sleep", type=float, default=0.5)
p.add_argument("--record")
args, unknown = p.parse_known_args()
trial = os.environ.get("CLOUD_ML_TRIAL_ID", "")
tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))


def record(**extra):
    if not args.record:
        return
    os.makedirs(args.record, exist_ok=True)
    data = {"argv": sys.argv[1:], "trial": trial, "tf_config": tf_config, "start": started,
            "metric_file": os.environ.get("CLOUD_ML_HP_METRIC_FILE"),
            "metric_tag": os.environ.get("CLOUD_ML_HP_METRIC_TAG"), "pid": os.getpid(), **extra}
    with open(os.path.join(args.record, f"{trial or 'none'}.json"), "w") as f:
        json.dump(data, f)


def varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def field(number, wire, payload):
    return varint(number << 3 | wire) + payload


def event(tag, value, step):
    value_msg = field(1, 2, varint(len(tag)) + tag.encode()) + field(2, 5, struct.pack("<f", value))
    summary = field(1, 2, varint(len(value_msg)) + value_msg)
    data = (field(1, 1, struct.pack("<d", time.time())) + field(2, 0, varint(step))
            + field(5, 2, varint(len(summary)) + summary))
    return struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4


tag = os.environ.get("CLOUD_ML_HP_METRIC_TAG", "training/hptuning/metric")
record()
if args.crash:
    print("crashing on purpose", file=sys.stderr, flush=True)
    sys.exit(3)
bad = args.bad_trial and trial == args.bad_trial
objective = (args.x - 0.3) ** 2 + args.n / 10 + (0.05 if args.kind == "b" else 0) + args.d / 100
steps = args.bad_steps if bad else args.steps
reporter = None
if args.reporter == "hypertune":
    import hypertune
    reporter = hypertune.HyperTune()
for step in range(1, steps + 1):
    value = 100.0 if bad else objective + 1.0 / step
    if args.reporter == "hypertune":
        reporter.report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag=tag, metric_value=value, global_step=step)
    elif args.reporter == "mlengine":
        from mlengine import hypertune as mle_hypertune
        mle_hypertune.report(None, value, step)
    elif args.reporter == "events":
        out = os.path.join(args.job_dir, trial, "eval")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "events.out.tfevents.0.test"), "ab") as f:
            f.write(event(tag, value, step * 10))
    print(f"step {step}: {value}", flush=True)
    time.sleep(args.bad_sleep if bad else args.sleep)
record(end=time.time(), objective=objective)
'''
