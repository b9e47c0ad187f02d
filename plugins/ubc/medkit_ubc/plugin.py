"""ubc's plugin module: what it registers. Targets are strings, so listing plugins never imports torch or smp."""

from medkit import ArchitectureEntry, DatasetEntry, LossEntry, Recipe, ScorerEntry, hookimpl

MEDKIT_API = ">=1.0,<2"

# --arch names: the paper's two models, then UBC over other smp encoders. The core resolves --arch by exact
# name, so `ubc` is the open form: `--arch ubc --set model.encoder=NAME` takes any smp encoder or tu-<timm>.
ARCHITECTURES = {
    "resnet34": (
        "resnet34",
        "baseline: 1-channel ResNet34, global average pooling, one linear layer (21.3 M)",
    ),
    "ubc_resnet34": (
        "ubc_resnet34",
        "UBC-ResNet34: ResNet34 + U-Net decoder 256/128/64/32/16 + mask (24.4 M)",
    ),
    "ubc_resnet18": ("ubc_resnet18", "UBC over ResNet18"),
    "ubc_efficientnet-b0": ("ubc_efficientnet_b0", "UBC over EfficientNet-B0"),
    "ubc_mobilenet_v2": ("ubc_mobilenet_v2", "UBC over MobileNetV2"),
    "ubc": ("ubc", "UBC over any smp encoder: --set model.encoder=NAME (resnet50, tu-convnext_atto, ...)"),
}


@hookimpl
def register_recipes(register):
    register(
        Recipe(
            name="train",
            target="medkit_ubc.recipes.train:train",
            config="medkit_ubc.config:TrainUbcConfig",
            summary="train a classifier (resnet34) or a Unet-boosted classifier (ubc_*) on slices with masks "
            "(embedded synthetic brain slices without --data)",
            default=True,
        )
    )
    register(
        Recipe(
            name="predict",
            target="medkit_ubc.recipes.predict:predict",
            config="medkit_ubc.config:PredictUbcConfig",
            summary="class probability per image with the predicted mask and Grad-CAM drawn beside it",
        )
    )
    register(
        Recipe(
            name="study",
            target="medkit_ubc.recipes.study:study",
            config="medkit_ubc.studies:StudyUbcConfig",
            summary="the paper's small-sample study: both models on 1..190 images per class over seeds, "
            "accuracy-vs-size table with Wilson intervals, figures 6 and 7",
            resumable=("archs", "sizes", "seeds"),
        )
    )


@hookimpl
def register_architectures(register):
    for name, (factory, summary) in ARCHITECTURES.items():
        register(
            ArchitectureEntry(
                name=name, target=f"medkit_ubc.models:{factory}", task="classification", summary=summary
            )
        )


@hookimpl
def register_datasets(register):
    register(
        DatasetEntry(
            name="synthetic_brains",
            target="medkit_ubc.data:dataset",
            task="classification",
            embedded=True,
            summary="procedural FLAIR-like brain slices, ring-enhancing vs diffuse lesions, with masks",
        )
    )
    register(
        DatasetEntry(
            name="brats",
            target="medkit_ubc.data:dataset",
            task="classification",
            summary="BraTS 2019 patient folders (*_flair, *_seg; grade from HGG/LGG or a CSV), cached once: "
            "dataset(FOLDER)",
        )
    )
    register(
        DatasetEntry(
            name="folder",
            target="medkit_ubc.data:dataset",
            task="classification",
            summary="class folders of PNG/NPY images with *_mask files beside them: dataset(FOLDER)",
        )
    )


@hookimpl
def register_losses(register):
    register(
        LossEntry(name="ce_dice", target="medkit_ubc.losses:UbcLoss", summary="alpha CE + (1-alpha) Dice")
    )


@hookimpl
def register_scorers(register):
    register(
        ScorerEntry(
            name="ubc",
            target="medkit_ubc.metrics:UbcScorer",
            summary="accuracy with 95 % Wilson interval, balanced accuracy, ROC-AUC, Dice",
        )
    )
