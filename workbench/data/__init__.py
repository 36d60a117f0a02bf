"""Data: stimulus sets, neural responses and RDMs (xarray), training data modules, checksummed files."""

from workbench.data.datamodules import (CIFAR10_CITATION, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD,
                                        CIFAR10DataModule, ImageFolderDataModule, balanced_subset)
from workbench.data.files import ChecksumError, DataNotFoundError, data_root, fetch
from workbench.data.neural import (RDM_SETS, RESPONSES, from_brainscore_layout, load_assembly, load_model_rdms,
                                   load_rdms, load_recording, load_responses, save_assembly, validate_assembly)
from workbench.data.stimuli import STIMULUS_SETS, V4_SESSIONS, StimulusSet, load_stimuli

__all__ = [
    "CIFAR10DataModule", "ImageFolderDataModule", "CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD",
    "CIFAR10_CITATION", "balanced_subset", "ChecksumError", "DataNotFoundError", "data_root", "fetch",
    "RDM_SETS", "RESPONSES", "STIMULUS_SETS", "V4_SESSIONS", "StimulusSet", "load_stimuli", "load_responses",
    "load_rdms", "load_model_rdms", "load_assembly", "load_recording", "validate_assembly", "save_assembly",
    "from_brainscore_layout",
]
