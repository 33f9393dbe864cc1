"""Final models sent to mltrail's recorder as the file their MLflow flavor writes.

The recorder process (:mod:`~mltrail.recording.recorder`) saves each run's final model as an
MLflow Model. Sent as an object, the model makes the recorder import its framework to unpickle
it: XGBoost brings scikit-learn with it, most of a second of CPU that the first script of a
session waits for at its exit. A flavor that saves nothing but the model's own file
(``model.save_model(path)``) can do without: the training's process writes that file (pickling
the model would have serialised it anyway) and sends a :class:`ModelFile`, the file's bytes and
what the flavor records of the model; the recorder writes the MLflow Model folder around it
with MLflow's model API (:meth:`ModelFile.save`). Where that cannot be done as the flavor would
(arguments it does not handle, an MLflow whose helpers differ), the recorder loads the model
from the file (:meth:`ModelFile.rebuilt`) and saves it with the flavor, as before.

An adapter offers its flavor's files with :func:`send_models_as_files`; the recorder then needs
the framework for nothing, and its warm-up skips its import (the framework's registration says
so: :attr:`mltrail.autolog.registry.Framework.models_as_files`).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger("mltrail.recording.model_file")


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """A model written in its MLflow flavor's own file format by the training's process.

    Attributes:
        flavor: the MLflow flavor ("xgboost"), also its ``mlflow.<flavor>`` loader module.
        file_name: the file's name in the MLflow Model folder ("model.ubj").
        data: the file's bytes.
        model_class: the model's class, ``module.Name`` (MLflow records it; its instances load
            the file with ``load_model(path)`` in :meth:`rebuilt`).
        flavor_conf: the rest of the flavor's entry in ``MLmodel`` (versions, format).
        in_place_of: where the flavor keeps the file in the folder (``data/model.keras``),
            for a flavor whose folder only MLflow writes as it should: the flavor saves
            ``stand_in()`` (Keras': :class:`~mltrail.recording.checkpoints.SavedFile`), whose
            file this one replaces. The recorder never rebuilds the model, whose class may be
            the script's own.
        stand_in: makes the stand-in model (with ``in_place_of``).
    """

    flavor: str
    file_name: str
    data: bytes
    model_class: str
    flavor_conf: Mapping[str, Any]
    in_place_of: str | None = None
    stand_in: Callable[[], Any] | None = None

    @classmethod
    def written(
        cls,
        model: Any,
        flavor: str,
        file_name: str,
        write: Callable[[str], Any],
        *,
        in_place_of: str | None = None,
        stand_in: Callable[[], Any] | None = None,
        **conf: Any,
    ) -> ModelFile:
        """The file ``write(path)`` makes of ``model`` (in a temporary folder), as a ModelFile."""
        with tempfile.TemporaryDirectory(prefix="mltrail-model-") as folder:
            path = Path(folder) / file_name
            write(str(path))
            data = path.read_bytes()
        kind = type(model)
        model_class = f"{kind.__module__}.{kind.__name__}"
        return cls(flavor, file_name, data, model_class, conf, in_place_of, stand_in)

    def save_in_place(self, module: Any, target: Path, signature: Any, **kwargs: Any) -> None:
        """Save the stand-in with the flavor ``module`` into ``target``, then put the file in
        the place of the stand-in's (see ``in_place_of``)."""
        from mltrail.recording.logged_models import adopt_model_file

        assert self.stand_in is not None and self.in_place_of is not None
        module.save_model(self.stand_in(), str(target), signature=signature, **kwargs)
        with tempfile.TemporaryDirectory(prefix="mltrail-model-") as temporary:
            path = Path(temporary) / self.file_name
            path.write_bytes(self.data)
            adopt_model_file(path, target, self.in_place_of)

    def save(self, target: Path, signature: Any, flavor_kwargs: Mapping[str, Any]) -> bool:
        """Write the MLflow Model folder into the empty folder ``target`` as the flavor's
        ``save_model`` would (``flavor_kwargs``: its other arguments). False, with ``target``
        left empty, where the flavor has to do it (see the module's docstring)."""
        # Arguments the file was written with (model_format="ubj") are done already.
        kwargs = {
            key: value
            for key, value in flavor_kwargs.items()
            if key not in self.flavor_conf or self.flavor_conf[key] != value
        }
        example = kwargs.pop("input_example", None)
        requirements = kwargs.pop("pip_requirements", None)
        # The flavor infers a signature from the model itself, or takes arguments not written
        # here (conda_env, code_paths, metadata, model_format, ...): it saves the model itself.
        if kwargs or requirements is None or (signature is None and example is not None):
            return False
        try:
            self._write(target, signature, example, list(requirements))
            return True
        except Exception:  # an MLflow whose model helpers differ: the flavor does it
            logger.debug("writing the %s model folder failed", self.flavor, exc_info=True)
            for entry in target.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            return False

    def _write(self, target: Path, signature: Any, example: Any, requirements: list[str]) -> None:
        from mlflow import pyfunc
        from mlflow.models import Model
        from mlflow.models.model import MLMODEL_FILE_NAME
        from mlflow.models.utils import _save_example
        from mlflow.utils.environment import _CONDA_ENV_FILE_NAME, _PYTHON_ENV_FILE_NAME

        # The order of MLflow's flavors: example, signature, the model's file, MLmodel (its size
        # counts what is written before it), then the environment files.
        model = Model()
        if example is not None:
            _save_example(model, example, str(target))
        if signature is not None:
            model.signature = signature
        (target / self.file_name).write_bytes(self.data)
        pyfunc.add_to_model(
            model,
            loader_module=f"mlflow.{self.flavor}",
            data=self.file_name,
            conda_env=_CONDA_ENV_FILE_NAME,
            python_env=_PYTHON_ENV_FILE_NAME,
            code=None,
        )
        model.add_flavor(
            self.flavor,
            **self.flavor_conf,
            data=self.file_name,
            model_class=self.model_class,
            code=None,
        )
        if hasattr(model, "model_size_bytes"):
            model.model_size_bytes = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        model.save(str(target / MLMODEL_FILE_NAME))
        for name, content in _environment_files(requirements).items():
            (target / name).write_bytes(content)

    def rebuilt(self) -> Any:
        """The model itself, loaded from the file (this imports its framework)."""
        module, _, name = self.model_class.rpartition(".")
        model = getattr(importlib.import_module(module), name)()
        with tempfile.TemporaryDirectory(prefix="mltrail-model-") as folder:
            path = Path(folder) / self.file_name
            path.write_bytes(self.data)
            model.load_model(str(path))
        return model


def _environment_files(requirements: list[str]) -> dict[str, bytes]:
    """The environment files of a model folder with these pip ``requirements`` (conda.yaml,
    requirements.txt, python_env.yaml, constraints.txt), as MLflow's flavors write them: once
    per state of the installed packages (a loop's models have the same ones)."""
    from mltrail.capture.env import read_per_package_state

    def write() -> dict[str, bytes]:
        import yaml
        from mlflow.utils.environment import (
            _CONDA_ENV_FILE_NAME,
            _CONSTRAINTS_FILE_NAME,
            _PYTHON_ENV_FILE_NAME,
            _REQUIREMENTS_FILE_NAME,
            _process_pip_requirements,
            _PythonEnv,
        )

        conda_env, pip_requirements, constraints = _process_pip_requirements(None, requirements)
        with tempfile.TemporaryDirectory(prefix="mltrail-model-env-") as folder:
            path = Path(folder) / _PYTHON_ENV_FILE_NAME
            _PythonEnv.current().to_yaml(str(path))
            python_env = path.read_bytes()
        files = {
            _CONDA_ENV_FILE_NAME: yaml.safe_dump(conda_env, default_flow_style=False).encode(),
            _REQUIREMENTS_FILE_NAME: "\n".join(pip_requirements).encode(),
            _PYTHON_ENV_FILE_NAME: python_env,
        }
        if constraints:
            files[_CONSTRAINTS_FILE_NAME] = "\n".join(constraints).encode()
        return files

    return read_per_package_state(f"model environment {requirements!r}", write)


_writers: dict[str, Callable[[Any], ModelFile | None]] = {}


def send_models_as_files(flavor: str, write: Callable[[Any], ModelFile | None]) -> None:
    """Send ``flavor``'s models to the recorder as ``write(model)`` (None: as the object)."""
    _writers[flavor] = write


def for_recorder(model: Any, flavor: str) -> Any:
    """``model`` as it goes to the recorder: a :class:`ModelFile` where its flavor has one."""
    write = _writers.get(flavor)
    if write is None:
        return model
    try:
        return write(model) or model
    except Exception:  # the object goes as it did; the recorder imports the framework for it
        logger.debug("writing the %s model's file failed", flavor, exc_info=True)
        return model
