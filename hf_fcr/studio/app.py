"""The studio's page (Gradio): choose r on FCR's curve, read the diagnosis, compare the fixes, see which images change,
remove a class, save and push. Every number comes from a ``StudioSession`` (the library's public API).

Stable element ids (for tests and users' scripts): ``status`` (messages and errors), ``verdict``, ``r``,
``worst_group`` and ``average`` (validation accuracies of FCR's edit at the current r, 4 decimals), ``methods``,
``flips``, ``card``, ``save``, ``push``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from .policy import StudioPolicy, check_host
from .session import DEMO, StudioSession, StudioSource

__all__ = ["build_app", "launch"]

logger = logging.getLogger(__name__)

_PROGRESS = gr.Progress()  # Gradio passes its progress tracker to a handler whose argument defaults to one


def _error(err: BaseException) -> str:
    """An error as a message on the page (the traceback goes to the log, never to the page)."""
    logger.debug("studio error:\n%s", "".join(traceback.format_exception(err)))
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return f"**Error ({type(err).__name__}):** {text}"


def _card_markdown(card: str) -> str:
    """A card for the page: its YAML metadata as a code block, then its text."""
    if card.startswith("---"):
        _, meta, body = card.split("---", 2)
        return f"```yaml\n{meta.strip()}\n```\n{body}"
    return card


def _short(group: str, split: str) -> str:
    """``label=0,place=1`` of ``validation`` as ``0,place=1 vali``: bar labels that fit under the bars."""
    return f"{group.replace('label=', '')} {split[:4]}"


def _bars(rows: dict[str, dict[str, Any]]) -> Any:
    data = [
        {
            "group": f"{group.replace('label=', '')} {split[:4]}",
            "accuracy": float(row["per_group"][group]),
            "split": split,
        }
        for group in next(iter(rows.values()))["per_group"]
        for split, row in rows.items()
        if group in row["per_group"]
    ]
    return pd.DataFrame(data)


def _curve(session: StudioSession, r: float) -> Any:
    table = session.curve().table
    data = [{"r": row["r"], "accuracy": row[k], "series": k} for row in table for k in ("worst_group", "average")]
    data += [{"r": float(r), "accuracy": y, "series": "current r"} for y in (0.0, 1.0)]
    return pd.DataFrame(data)


def _gallery(session: StudioSession, r: float) -> list[tuple[Any, str]]:
    return [
        (session.image_file(f["index"]), f"{f['before']} -> {f['after']} ({f['group']}; p={f['confidence']:.2f})")
        for f in session.flips(r)
    ]


def _at_rate(session: StudioSession, r: float) -> tuple:
    """The outputs that follow the r slider at once: worst group, average, per-group bars, curve, methods (the
    gallery follows in a second step: ``_gallery``)."""
    rows = session.at_rate(r)
    val = rows[session.splits[0]]
    return (
        f"{val['worst_group']:.4f}",
        f"{val['average']:.4f}",
        _bars(rows),
        _curve(session, r),
        pd.DataFrame(session.table(r, rows)),
    )


class _Handlers:
    """What each control of the page does. The session the server opened (``shared``) is every visitor's until
    they load another model: that one is theirs alone (``mine``, kept in their page's ``gr.State``)."""

    def __init__(
        self, source: StudioSource, session: StudioSession | None, loaded: int, follow: int, policy: StudioPolicy
    ) -> None:
        self.source, self.shared, self.loaded, self.follow = source, session, loaded, follow
        self.policy = policy
        self._opening = threading.Lock()  # the first visitors wait for one load of the shared session

    def current(self, mine: StudioSession | None) -> StudioSession | None:
        return mine if mine is not None else self.shared

    def show(self, session: StudioSession) -> list[Any]:
        d = session.search.diagnosis
        r_value = session.chosen_r
        names = list(session.remover.class_names)
        return [
            session.verdict,
            d.plot(title="FCR against random attributes") if d is not None else None,
            gr.update(value=r_value),
            gr.update(choices=names, value=names[0]),
            *_at_rate(session, r_value),
            _gallery(session, r_value),
        ]

    def _load(self, model: str, dataset: str, label: str, attribute: str, progress: Any) -> StudioSession:
        wanted = StudioSource(
            model_name_or_path=model.strip() or None,
            dataset_name=dataset.strip() or None,
            label_column=label.strip() or "label",
            attribute_column=attribute.strip() or "place",
            image_column=self.source.image_column,
            splits=self.source.splits,
            cache_dir=self.source.cache_dir,
            seed=self.source.seed,
        )
        return StudioSession.load(wanted, lambda f, text: progress(f, desc=text))

    def load(
        self, mine: Any, model: str, dataset: str, label: str, attribute: str, progress: Any = _PROGRESS
    ) -> list[Any]:
        """A visitor's Load: their own session from then on (the others' pages keep theirs)."""
        try:
            session = self._load(model, dataset, label, attribute, progress)
        except Exception as err:  # every failure becomes a message; the page keeps what it showed
            return [_error(err), *[gr.update() for _ in range(self.loaded)], mine]
        return [f"Loaded {session.source.model_name_or_path or DEMO}.", *self.show(session), session]

    def open(self, progress: Any = _PROGRESS) -> list[Any]:
        """A page opened: the shared session, loaded by the first visitor."""
        with self._opening:
            if self.shared is None:
                s = self.source
                try:
                    self.shared = self._load(
                        s.model_name_or_path or "", s.dataset_name or "", s.label_column, s.attribute_column, progress
                    )
                except Exception as err:
                    return [_error(err), *[gr.update() for _ in range(self.loaded)]]
        return [f"Loaded {self.shared.source.model_name_or_path or DEMO}.", *self.show(self.shared)]

    def rate(self, mine: Any, value: float) -> list[Any]:
        session = self.current(mine)
        if session is None:
            return [gr.update() for _ in range(self.follow)]
        return list(_at_rate(session, float(value)))

    def gallery(self, mine: Any, value: float) -> Any:
        session = self.current(mine)
        return gr.update() if session is None else _gallery(session, float(value))

    def remove(self, mine: Any, name: str, n: float, rate: float) -> list[Any]:
        try:
            result = self.current(mine).remove_class(name, int(n), float(rate))
        except Exception as err:
            return [_error(err), gr.update(), gr.update()]
        table = pd.DataFrame(result["per_class"])
        return ["Removed on validation (the model is unchanged).", table, result["edits"]]

    def preview(self, mine: Any, value: float) -> list[Any]:
        try:
            return ["Card rendered below.", _card_markdown(self.current(mine).card(float(value)))]
        except Exception as err:
            return [_error(err), gr.update()]

    def save(self, mine: Any, value: float, path: str, replace: bool) -> list[Any]:
        try:
            session = self.current(mine)
            target = self.policy.save_path(path)
            text = _card_markdown(session.card(float(value)))
            written = session.save(target, float(value), overwrite=replace)
        except Exception as err:
            return [_error(err), gr.update()]
        return [f"Saved to `{written}` (r = {float(value):.4f}).", text]

    def push(self, mine: Any, value: float, repo_id: str, secret: str, is_private: bool) -> list[Any]:
        try:
            if not repo_id.strip():
                raise ValueError("give a Hub repo id (org/name) to push to.")
            session = self.current(mine)
            token = self.policy.push_token(secret)
            text = _card_markdown(session.card(float(value), repo_id.strip()))
            session.push(repo_id.strip(), float(value), token=token, private=is_private)
        except Exception as err:
            return [_error(err), gr.update()]
        return [f"Pushed to `{repo_id.strip()}` ({'private' if is_private else 'public'}).", text]


def build_app(
    source: StudioSource | None = None, session: StudioSession | None = None, policy: StudioPolicy | None = None
) -> Any:
    """The studio as a ``gradio.Blocks`` (not launched). ``session``: an already loaded one (else ``source`` is
    loaded when the page first opens; None: the built-in demo). ``policy``: where saves may go and which token a
    push uses (default: ``StudioPolicy()``, saves under ./studio-saves, the typed token only)."""
    source, policy = source or StudioSource(), policy or StudioPolicy()
    with gr.Blocks(title="hf-fcr studio") as app:
        gr.Markdown(
            "# hf-fcr studio\nFictitious Class Removal: one last-layer weight edited in closed form at rate r, beside "
            "its random-attribute control and the head-level fixes. Move r: nothing is recomputed but the edit."
        )
        with gr.Row():
            model_box = gr.Textbox(
                label="model_name_or_path",
                value=source.model_name_or_path or "",
                placeholder="empty: the built-in demo",
                elem_id="model_box",
            )
            data_box = gr.Textbox(label="dataset_name", value=source.dataset_name or "")
            label_box = gr.Textbox(label="label_column", value=source.label_column)
            attribute_box = gr.Textbox(label="attribute_column", value=source.attribute_column)
            load = gr.Button("Load", elem_id="load")
        status = gr.Markdown(elem_id="status")
        with gr.Tab("Spurious cue"):
            verdict = gr.Markdown(elem_id="verdict")
            diagnosis_plot = gr.Plot(label="diagnosis")
            r = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="r (Eq. 8's rate)", elem_id="r")
            with gr.Row():
                worst = gr.Textbox(label="validation worst group (FCR at r)", elem_id="worst_group")
                average = gr.Textbox(label="validation average (FCR at r)", elem_id="average")
            with gr.Row():
                bars = gr.BarPlot(
                    x="group", y="accuracy", color="split", y_lim=[0, 1], label="per group at r", x_label_angle=-30
                )
                curve = gr.LinePlot(x="r", y="accuracy", color="series", y_lim=[0, 1], label="FCR's validation sweep")
            methods = gr.Dataframe(label="methods (validation and test)", elem_id="methods", interactive=False)
            flips = gr.Gallery(label="predictions that change at r", elem_id="flips", columns=6, height=260)
        with gr.Tab("Class removal"):
            cls = gr.Dropdown(label="class", choices=[])
            num_weights = gr.Slider(1, 5, value=1, step=1, label="weights")
            removal_r = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="r")
            remove = gr.Button("Remove (validation: forget / retain per class)", elem_id="remove")
            per_class = gr.Dataframe(label="accuracy per class, before and after", interactive=False)
            edited = gr.JSON(label="edited weights")
        with gr.Tab("Save and push"):
            card = gr.Markdown(elem_id="card")
            preview = gr.Button("Preview the card at r", elem_id="preview")
            with gr.Row():
                folder = gr.Textbox(label=f"folder (under {Path(policy.save_root).resolve()})", elem_id="folder")
                overwrite = gr.Checkbox(label="overwrite", value=False)
                save = gr.Button("Save", elem_id="save")
            with gr.Row():
                repo = gr.Textbox(label="Hub repo id", elem_id="repo")
                token = gr.Textbox(
                    label="token (used once, never stored)"
                    + ("; empty: the server's login" if policy.allow_server_token else ""),
                    type="password",
                    elem_id="token",
                )
                private = gr.Checkbox(label="private", value=True)
                push = gr.Button("Push", elem_id="push")
        follow = [worst, average, bars, curve, methods]
        loaded = [verdict, diagnosis_plot, r, cls, *follow, flips]
        h = _Handlers(source, session, len(loaded), len(follow), policy)
        mine = gr.State(None)  # this visitor's own session, once they load a model
        load.click(h.load, [mine, model_box, data_box, label_box, attribute_box], [status, *loaded, mine])
        app.load(h.open, None, [status, *loaded])
        # the numbers and plots first, without the queue (closed form: tens of milliseconds), then the gallery
        moved = r.change(h.rate, [mine, r], follow, show_progress="hidden", trigger_mode="always_last", queue=False)
        moved.then(h.gallery, [mine, r], [flips], show_progress="hidden", trigger_mode="always_last")
        remove.click(h.remove, [mine, cls, num_weights, removal_r], [status, per_class, edited])
        preview.click(h.preview, [mine, r], [status, card])
        save.click(h.save, [mine, r, folder, overwrite], [status, card])
        push.click(h.push, [mine, r, repo, token, private], [status, card])
    return app


def launch(
    source: StudioSource | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    policy: StudioPolicy | None = None,
    auth: tuple[str, str] | None = None,
    public: bool = False,
) -> Any:
    """Build and serve the studio on ``host:port`` (127.0.0.1 by default; ``share`` only when asked).

    Beyond this machine (another host, or a ``share`` link) the page needs a login (``auth``: Gradio's user and
    password) or ``public=True``, which serves it to anyone with a warning (``policy.check_host``).

    Raises:
        ValueError: another host or ``share`` without ``auth`` and without ``public``.
    """
    warning = check_host("0.0.0.0" if share else host, auth, public)
    if warning:
        print(warning, file=sys.stderr)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(source, policy=policy)
    return app.launch(server_name=host, server_port=port, share=share, auth=auth)
