"""The one ``sarm`` command.

``fit``/``validate``/``test``/``predict`` are Lightning's (LightningCLI; the model and data classes
are chosen in the YAML with ``class_path``). ``cache``, ``attribute``, ``score`` and ``report`` are jsonargparse entry points
beside them, with ``--config`` and ``--print_config`` too.
"""

from __future__ import annotations

import sys
import warnings

from sarm import stop
from sarm.errors import NumericalFault, SarmInputError

LIGHTNING = {
    "fit": "train an SAE (sarm.sae.SAEModule) or a SARM (sarm.reward.SARM), as the config says",
    "validate": "evaluate a model on the validation split",
    "test": "evaluate a model on the test split",
    "predict": "run a model's predict loop (with callbacks such as RewardAttribution)",
}
OWN = {
    "cache": "run the truncated backbone over a preference dataset and cache its activations",
    "attribute": "per-feature reward attribution of a trained SARM on a preference dataset",
    "score": "rewards (and their top features) of pairs or responses from an exported reward model",
    "report": "self-contained HTML report of a SARM's features over one or two preference datasets",
}
USAGE = "usage: sarm {" + ",".join([*LIGHTNING, *OWN]) + "} [--config CONFIG.yaml] [options]\n\n" + "\n".join(
    f"  {name:<10} {text}" for name, text in {**LIGHTNING, **OWN}.items()
) + "\n\n`sarm SUBCOMMAND --help` lists a subcommand's options; `--print_config` prints its full config.\n"


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
        raise SarmInputError(f"{checkpoint}: refused to unpickle: it holds more than tensors and plain data "
                             f"({first_line}); pass --weights_only false only for a checkpoint you trust") from None


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``name`` on a command line (``name value`` or ``name=value``), if given."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def cache_cli(args: list[str]) -> None:
    from jsonargparse import ActionConfigFile, ArgumentParser

    from sarm.data.cache import CacheSettings, cache_activations

    parser = ArgumentParser(prog="sarm cache", description=OWN["cache"])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(CacheSettings, nested_key=None)
    parser.add_function_arguments(cache_activations, nested_key=None, skip={"settings"})
    cfg = parser.parse_args(args)
    init = parser.instantiate_classes(cfg)
    settings = CacheSettings(**{k: init[k] for k in CacheSettings.__dataclass_fields__})
    rest = {k: init[k] for k in ("output", "batch_size", "shard_tokens", "accelerator", "devices", "strategy",
                                 "trust_remote_code")}
    cache_activations(settings, **rest)


def function_cli(command: str, function, args: list[str]) -> None:
    """A jsonargparse command line for a plain function: its signature and docstring are the options."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=f"sarm {command}", description=OWN[command])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_function_arguments(function, nested_key=None)
    cfg = parser.parse_args(args)
    function(**{k: v for k, v in vars(cfg).items() if k not in ("config", "__path__")})


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
        print(USAGE, end="")
        return
    command, args = argv[0], argv[1:]
    if from_command_line:
        stop.install()
    try:
        if command == "cache":
            cache_cli(args)
        elif command == "attribute":
            from sarm.attribute import attribute

            function_cli(command, attribute, args)
        elif command == "score":
            from sarm.score import score

            function_cli(command, score, args)
        elif command == "report":
            from sarm.report.build import report

            function_cli(command, report, args)
        elif command in LIGHTNING:
            lightning_cli(None if from_command_line else argv)
        else:
            print(USAGE, end="", file=sys.stderr)
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
