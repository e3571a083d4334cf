"""The one ``sarm`` command.

``fit``/``validate``/``test``/``predict`` are Lightning's (LightningCLI; the model and data classes are chosen in the
YAML with ``class_path``). sarm's own commands are the table ``COMMANDS``, as litgpt builds its CLI from a dict of
functions: each name maps to a ``"module:function"`` whose typed signature and docstring are the subcommand's
options and help (jsonargparse), with ``--config`` and ``--print_config`` for each. A function is imported only when
its command runs, so ``sarm --help`` imports neither torch nor Lightning.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import sys
import typing
import warnings
from pathlib import Path

from sarm import stop
from sarm.errors import NumericalFault, SarmInputError

LIGHTNING = {
    "fit": "train an SAE (sarm.sae.SAEModule) or a SARM (sarm.reward.SARM), as the config says",
    "validate": "evaluate a model on the validation split",
    "test": "evaluate a model on the test split",
    "predict": "run a model's predict loop (with callbacks such as RewardAttribution)",
}
COMMANDS = {
    "cache": "sarm.cache.writer:cache_activations",
    "attribute": "sarm.attribution.command:attribute",
    "score": "sarm.score:score",
    "report": "sarm.report.build:report",
    "recovery": "sarm.cli:recovery",
    "serve": "sarm.serve.server:serve",
    "rerank": "sarm.rl.rerank:rerank",
    "drift": "sarm.rl.monitor:drift",
}


def summary(target: str) -> str:
    """The first line of a table function's docstring, read from its source file: importing the module would
    import torch, seconds per ``sarm --help``."""
    module, name = target.split(":")
    source = Path(__file__).parents[1].joinpath(*module.split(".")).with_suffix(".py")
    tree = ast.parse(source.read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)
    return ast.get_docstring(function).splitlines()[0]


def usage() -> str:
    commands = {**LIGHTNING, **{name: summary(target) for name, target in COMMANDS.items()}}
    return (
        "usage: sarm {"
        + ",".join(commands)
        + "} [--config CONFIG.yaml] [options]\n\n"
        + "".join(f"  {name:<10} {text}\n" for name, text in commands.items())
        + "\n`sarm SUBCOMMAND --help` lists a subcommand's options; `--print_config` prints its full config.\n"
    )


def run_command(name: str, args: list[str]) -> None:
    """Parse ``args`` with the options of ``COMMANDS[name]`` and call it.

    A parameter typed with a dataclass is flattened: its fields are top-level options (``sarm cache``'s
    ``--data``, ``--model``, ``--layer``, ... are ``CacheSettings``'s), and the function gets the dataclass.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    module, attribute = COMMANDS[name].split(":")
    function = getattr(importlib.import_module(module), attribute)
    flattened = {
        param: hint
        for param, hint in typing.get_type_hints(function).items()
        if param != "return" and dataclasses.is_dataclass(hint)
    }
    parser = ArgumentParser(prog=f"sarm {name}", description=inspect.getdoc(function).split("\nArgs:")[0])
    parser.add_argument("--config", action=ActionConfigFile)
    for cls in flattened.values():
        parser.add_class_arguments(cls, nested_key=None)
    parser.add_function_arguments(function, nested_key=None, skip=set(flattened))
    kwargs = {k: v for k, v in vars(parser.parse_args(args)).items() if k not in ("config", "__path__")}
    for param, cls in flattened.items():
        kwargs[param] = cls(**{field.name: kwargs.pop(field.name) for field in dataclasses.fields(cls)})
    function(**kwargs)


def recovery(
    sarm: str = "runs/demo/sarm/export", cache: str = "runs/demo/cache", split: str = "test", output: str | None = None
) -> dict:
    """Ground-truth recovery of a SARM trained on the built-in planted-attribute data.

    Prints, per deciding attribute: its pairs' accuracy, the top-3 features by |mean margin contribution| on those
    pairs with each one's F1 as a classifier of the attribute (over all responses, and within the attribute's own
    pairs), the accuracy and mean margin on those pairs after zeroing the top feature and after zeroing all three,
    and the best F1 that any feature of the SAE reaches (attributed or not); then the distractors' share of the
    margin attribution. Beside it, judged against what the backbone represents (``sarm.attribution.probes``; each
    cell chosen side / rejected side of the attribute): the F1 of a logistic probe on the pooled standardized hidden
    state (the ceiling), the F1 of the best single latent (chosen on train) and its ratio to the ceiling, the 1- and
    5-sparse probes' ratios, and the verdict (pass: single ratio ≥ 0.9 where the ceiling is ≥ 0.8; "not rep.":
    ceiling < 0.8). Probes are fitted on train, tuned on val and scored on test, whatever ``split`` says.

    Args:
        sarm: directory of an exported head-only SARM (``sarm.json``).
        cache: the ``builtin:planted`` activation cache it was trained on.
        split: the cache's split to evaluate (``train``, ``val``, ``test``).
        output: also write the table as JSON here.
    """
    from sarm.attribution import collect_pair_features, planted_recovery
    from sarm.attribution.probes import planted_probes
    from sarm.cache import PairActivationDataModule
    from sarm.io import write_json
    from sarm.reward.export import load_network
    from sarm.sae.coverage import SIDES

    network, config = load_network(sarm)
    data = PairActivationDataModule(cache, batch_size=256, predict_split=split, pooling=config["pooling"])
    result = planted_recovery(network, collect_pair_features(network, data.predict_dataloader()), data.cache.pairs)
    result["probes"] = planted_probes(network, data, data.cache.pairs)
    probes = result["probes"]["properties"]

    def sides(attribute: str, cell) -> str:
        return "/".join(
            cell(probes[f"{attribute}:{side}"]) if f"{attribute}:{side}" in probes else "-" for side in SIDES
        )

    def ratio(value) -> str:  # an F1 or a ratio, "-" where undefined
        return "-" if value is None else f"{value:.2f}"

    short = {"pass": "pass", "fail": "fail", "not represented": "not rep."}

    print(
        f"{'attribute':<12}{'pairs':>6}{'acc':>7}  {'top-3 features (F1 all responses / within its pairs)':<58}"
        f"{'zero top-1: acc, margin':>25}{'zero top-3: acc, margin':>25}{'any feature':>13}"
        f"{'probe F1':>12}{'single F1':>12}{'ratio':>12}{'1-sparse':>12}{'5-sparse':>12}  verdict"
    )
    for row in result["attributes"]:
        top = ", ".join(f"{f} ({a:.2f}/{b:.2f})" for f, a, b in zip(row["features"], row["f1"], row["f1_within"]))
        one = f"{row['accuracy_zeroed']:.3f}, {row['margin_zeroed']:.2f}/{row['margin_before']:.2f}"
        three = f"{row['accuracy_zeroed_top']:.3f}, {row['margin_zeroed_top']:.2f}/{row['margin_before']:.2f}"
        ceiling = f"{row['ceiling_f1']:.2f}/{row['ceiling_f1_within']:.2f}"
        a = row["attribute"]
        print(
            f"{a:<12}{row['pairs']:>6}{row['accuracy_before']:>7.3f}  {top:<58}{one:>25}{three:>25}{ceiling:>13}"
            f"{sides(a, lambda p: ratio(p['ceiling_f1'])):>12}{sides(a, lambda p: ratio(p['single_f1'])):>12}"
            f"{sides(a, lambda p: ratio(p['single_ratio'])):>12}{sides(a, lambda p: ratio(p['sparse1_ratio'])):>12}"
            f"{sides(a, lambda p: ratio(p['sparse5_ratio'])):>12}  {sides(a, lambda p: short[p['verdict']])}"
        )
    distractor_probes = "; ".join(
        f"{name} probe F1 {probes[name]['ceiling_f1']:.2f}, single {probes[name]['single_f1']:.2f} "
        f"(ratio {ratio(probes[name]['single_ratio'])}, 1-/5-sparse {ratio(probes[name]['sparse1_ratio'])}/"
        f"{ratio(probes[name]['sparse5_ratio'])}): {probes[name]['verdict']}"
        for name in result["distractors"]
        if name in probes
    )
    print(
        f"distractors {', '.join(result['distractors'])}: detected by features {result['distractor_features']}, "
        f"carrying {result['distractor_share']:.2%} of the margin attribution; {distractor_probes}"
    )
    if output:
        write_json(output, result)
    return result


def lightning_cli(args: list[str] | None) -> None:
    import pickle

    from lightning.pytorch.cli import LightningCLI

    from sarm.callbacks import StopOnSignal

    class SarmCLI(LightningCLI):
        def before_instantiate_classes(self) -> None:
            # A checkpoint given with --ckpt_path is unpickled with weights_only unless the user says
            # otherwise (`--weights_only false`, for checkpoints they trust): whatever torch's default
            # or environment, one from elsewhere cannot run code when loaded.
            config = self.config[self.subcommand]
            if "weights_only" in config and config["weights_only"] is None:
                config["weights_only"] = True

        def instantiate_trainer(self, **kwargs):
            trainer = super().instantiate_trainer(**kwargs)
            trainer.callbacks.append(StopOnSignal())  # every loop stops on a signal and says where
            return trainer

    try:
        SarmCLI(subclass_mode_model=True, subclass_mode_data=True, save_config_kwargs={"overwrite": True}, args=args)
    except pickle.UnpicklingError as err:
        checkpoint = _option(sys.argv[1:] if args is None else args, "--ckpt_path") or "the checkpoint"
        first_line = str(err).strip().splitlines()[0]
        raise SarmInputError(
            f"{checkpoint}: refused to unpickle: it holds more than tensors and plain data "
            f"({first_line}); pass --weights_only false only for a checkpoint you trust"
        ) from None


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``name`` on a command line (``name value`` or ``name=value``), if given."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# Warnings about things sarm does on purpose: token streams know their length and run in the main
# process; the frozen SAE stays in eval mode while the head trains; training loaders resume mid-epoch
# from the trainer's own batch count (sarm.data.pairs.ResumableLoader), not the state_dict protocol
# Lightning checks for.
_EXPECTED_WARNINGS = (
    r".*ended before the epoch ended and your dataloader is not resumable.*",
    r".*IterableDataset.*has `__len__` defined.*",
    r".*module\(s\) in eval mode at the start of training.*",
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",
)


def main(argv: list[str] | None = None) -> None:
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return
    command, args = argv[0], argv[1:]
    if from_command_line:
        stop.install()
    try:
        if command in COMMANDS:
            run_command(command, args)
        elif command in LIGHTNING:
            lightning_cli(None if from_command_line else argv)
        else:
            print(usage(), end="", file=sys.stderr)
            print(f"sarm: error: unknown subcommand '{command}'", file=sys.stderr)
            sys.exit(2)
    except SarmInputError as err:
        # Bad input is the user's to fix: say where and what, without a traceback.
        print(f"sarm: error: {err}", file=sys.stderr)
        sys.exit(2)
    except NumericalFault as err:
        print(f"sarm: error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        # The filesystem said no (read-only, full, a file where a directory should be): a sentence, not a stack.
        where = err.filename if err.filename is not None else "sarm"
        print(f"sarm: error: {where}: {err.strerror or err}", file=sys.stderr)
        sys.exit(1)
    except BaseException as err:
        stopped = stop.describe(err)
        if stopped is None:
            raise
        print(f"sarm: error: {stopped.message()}", file=sys.stderr, flush=True)
        sys.exit(stopped.exit_status)


if __name__ == "__main__":
    main()
