"""``tagpipe generate`` and ``tagpipe seq2seq-train``: UniLM seq2seq from the command line.

Only click is imported here; torch and transformers load inside the commands, so registering
them keeps ``tagpipe --help`` fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tagpipe.commands.options import device_option, quiet_option, threads_option
from tagpipe.corpora.io import write_atomically
from tagpipe.plugins.seq2seq.names import STRATEGIES


@click.command("generate")
@click.argument("input_file", metavar="INPUT.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A seq2seq model folder (tagpipe seq2seq-train).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write JSON Lines here (replaced atomically) instead of stdout.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="greedy", show_default=True)
@click.option("--beams", type=int, default=4, show_default=True, help="Beam size (--strategy beam).")
@click.option("--length-penalty", type=float, default=1.0, show_default=True,
              help="Beam scores are log p / length ** this.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sampling: the k most likely (0: all).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Sampling: nucleus mass.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling generator.")
@click.option("--max-length", type=int, default=None, help="Generated tokens at most (default: the model's).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--no-cache", is_flag=True, help="Re-encode the whole sequence each step (slow; for checks).")
@device_option
@threads_option
def generate(input_file, model_dir, output, strategy, beams, length_penalty, top_k, top_p, temperature, seed,
             max_length, batch_size, no_cache, device, threads):
    """Generate a text for each record of INPUT.jsonl (a string ``source`` per line).

    Each output line is the input record with ``generated`` added.
    """
    from tagpipe.devices import resolve_device
    from tagpipe.plugins.seq2seq.generation import generate as run
    from tagpipe.plugins.seq2seq.model import Seq2SeqModel, read_pairs
    from tagpipe.tasks import set_threads

    device = str(resolve_device(device))
    set_threads(threads)
    records = read_pairs(input_file, need_target=False)
    model = Seq2SeqModel.load(model_dir, device=device)
    try:
        ids = run(model, [r["source"] for r in records], strategy=strategy, num_beams=beams,
                  length_penalty=length_penalty, top_k=top_k, top_p=top_p, temperature=temperature, seed=seed,
                  max_length=max_length, batch_size=batch_size, use_cache=not no_cache)
    except ValueError as exc:  # an option out of range
        raise click.UsageError(str(exc)) from None
    lines = [json.dumps({**r, "generated": model.decode_ids(row)}, ensure_ascii=False) for r, row in
             zip(records, ids, strict=True)]
    if output is None:
        for line in lines:
            click.echo(line)
        return
    write_atomically(output, "".join(line + "\n" for line in lines))
    click.echo(f"{len(lines)} generations written to {output}", err=True)


@click.command("seq2seq-train")
@click.option("--train", "train_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON Lines with string fields source and target.")
@click.option("--dev", "dev_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Dev pairs: the model with the lowest dev loss is kept.")
@click.option("--pretrained", required=True, type=click.Path(path_type=Path),
              help="Local BERT-family folder (config.json, weights, tokenizer.json).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option("--max-source-length", type=int, default=128, show_default=True)
@click.option("--max-target-length", type=int, default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@threads_option
@quiet_option
def seq2seq_train(train_file, dev_file, pretrained, output, epochs, batch_size, lr, max_source_length,
                  max_target_length, seed, device, threads, quiet):
    """Fine-tune a BERT masked LM as a UniLM seq2seq model on source/target pairs."""
    from tagpipe.devices import resolve_device
    from tagpipe.plugins.seq2seq.model import train_seq2seq
    from tagpipe.tasks import set_threads

    device = str(resolve_device(device))
    set_threads(threads)

    history = train_seq2seq(train=train_file, dev=dev_file, pretrained=pretrained, output=output, epochs=epochs,
                            batch_size=batch_size, lr=lr, max_source_length=max_source_length,
                            max_target_length=max_target_length, seed=seed, device=device,
                            log=(lambda _m: None) if quiet else (lambda m: click.echo(m, err=True)))
    if not quiet:
        click.echo(f"model saved to {output} (final train loss {history['train_loss'][-1]:.4f})", err=True)
