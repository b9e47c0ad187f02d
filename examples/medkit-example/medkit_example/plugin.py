"""The plugin module named by the entry point. It stays light: targets are "module:attribute" strings,
so listing plugins never imports torch."""

from medkit import ArchitectureEntry, DatasetEntry, Recipe, hookimpl

MEDKIT_API = ">=1.0,<2"


@hookimpl
def register_recipes(register):
    register(
        Recipe(
            name="train",
            target="medkit_example.recipe:train",
            config="medkit_example.config:TrainShapesConfig",
            summary="train a segmenter of discs and squares; reports per-class Dice/IoU",
            default=True,
        )
    )


@hookimpl
def register_architectures(register):
    register(
        ArchitectureEntry(
            name="tiny_cnn",
            target="medkit_example.model:TinyCNN",
            task="segmentation",
            summary="three dilated 3x3 conv blocks and a 1x1 head",
        )
    )


@hookimpl
def register_datasets(register):
    register(
        DatasetEntry(
            name="shapes",
            target="medkit_example.data:ShapesDataset",
            task="segmentation",
            summary="procedural 1-channel images with a disc and a square (embedded default)",
            embedded=True,
        )
    )
    register(
        DatasetEntry(
            name="npz_folder",
            target="medkit_example.data:NpzFolderDataset",
            task="segmentation",
            summary="a folder of .npz files, each with `image` (H, W) and `mask` (H, W) arrays (--data)",
        )
    )
