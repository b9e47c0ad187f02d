"""ct-seg's plugin module: what it registers. Targets are strings, so listing plugins never imports torch."""

from medkit import ArchitectureEntry, DatasetEntry, LossEntry, Recipe, ScorerEntry, hookimpl

MEDKIT_API = ">=1.0,<2"

ARCHITECTURES = {
    "mini_unet": ("unet", "Mini U-Net: 2 strided-conv encoder levels (spec: 310b^2+64b+4 parameters)"),
    "unet": ("unet", "U-Net: 4 strided-conv encoder levels, bottleneck 16b"),
    "max_unet": ("unet", "Max U-Net: 5 encoder levels, bottleneck 32b x 3 convs"),
    "unetpp": ("unetpp", "U-Net++: nested skip pathways, 5 levels, no deep supervision"),
    "attn_unetpp_v1": (
        "unetpp",
        "Attention U-Net++ V1 as in the authors' code: its gates do not reach the output",
    ),
    "attn_unetpp_v1_wired": ("unetpp", "Attention U-Net++ V1 corrected: the gates feed the nested nodes"),
    "attn_unetpp_v2": ("unetpp", "Attention U-Net++ V2: every same-level skip gated (best on the trachea)"),
    "attn_unetpp_v3": ("unetpp", "Attention U-Net++ V3: V2 with residual blocks"),
    "attn_unetpp_v4": ("unetpp", "Attention U-Net++ V4: V3 with 3 convs per block"),
    "medt": ("transformers", "MedT as the authors simplified it: conv stages + 4 transformer layers"),
    "transunet": ("transformers", "TransUNet as the authors wrote it (one token at 128 px)"),
    "transunet_tokens": ("transformers", "TransUNet corrected: a patch size that leaves many tokens"),
    "deeplabv3plus_mobilenetv2": ("deeplab", "DeepLabv3+ on MobileNetV2, ASPP 6/12/18"),
    "deeplabv3plus_mobilenetv2_cbam": ("deeplab", "DeepLabv3+ MobileNetV2 with CBAM, ASPP 2/4/6"),
    "deeplabv3plus_efficientnetb0_cbam": ("deeplab", "DeepLabv3+ EfficientNet-B0 with CBAM, ASPP 1/2/3"),
}
LOSSES = {
    "ce": ("CrossEntropy", "cross-entropy"),
    "weighted_ce": (
        "WeightedCrossEntropy",
        "cross-entropy with inverse-frequency class weights from the masks",
    ),
    "focal": ("Focal", "focal loss, gamma 2 (the report's choice)"),
    "dice": ("SoftDice", "soft Dice over all classes"),
    "iou": ("SoftIoU", "soft IoU (Jaccard)"),
    "tversky": ("Tversky", "Tversky loss (alpha = beta = 0.5 is Dice)"),
    "hybrid": ("Hybrid", "mean of focal, Dice and IoU"),
}


@hookimpl
def register_recipes(register):
    register(
        Recipe(
            name="train",
            target="medkit_ct_seg.recipes.train:train",
            config="medkit_ct_seg.config:TrainSegConfig",
            summary="train a lung and trachea segmenter on CT slices (embedded phantoms without --data)",
            default=True,
        )
    )
    register(
        Recipe(
            name="predict",
            target="medkit_ct_seg.recipes.predict:predict",
            config="medkit_ct_seg.config:PredictSegConfig",
            summary="segment volumes with a checkpoint: NIfTI masks and PNG overlays (unseen phantoms by default)",
        )
    )
    register(
        Recipe(
            name="study",
            target="medkit_ct_seg.recipes.study:study",
            config="medkit_ct_seg.studies:StudySegConfig",
            summary="the paper's studies (architectures x widths, batch sizes, losses, Adam vs Lion, "
            "augmentations) as grids of train runs, with a table and plots; small on CPU, --set scale=paper",
            # a resumed study keeps its finished trials and may change its grid (drop a failing arch, add widths)
            resumable=("studies", "archs", "widths", "batch_sizes", "losses", "optimizers", "augmentations"),
        )
    )


@hookimpl
def register_architectures(register):
    for name, (module, summary) in ARCHITECTURES.items():
        register(
            ArchitectureEntry(
                name=name,
                target=f"medkit_ct_seg.models.{module}:{name}",
                task="segmentation",
                summary=summary,
            )
        )


@hookimpl
def register_datasets(register):
    register(
        DatasetEntry(
            name="phantoms",
            target="medkit_ct_seg.data:phantom_cache",
            task="segmentation",
            embedded=True,
            summary="procedural chest CT phantoms (body, lungs, trachea and bronchi) as an H5 slice cache",
        )
    )
    register(
        DatasetEntry(
            name="folder",
            target="medkit_ct_seg.data:folder_cache",
            task="segmentation",
            summary="a folder of volumes with masks (LUNA16, images/+masks/, imagesTr/labelsTr or *_seg), cached once",
        )
    )


@hookimpl
def register_losses(register):
    for name, (cls, summary) in LOSSES.items():
        register(LossEntry(name=name, target=f"medkit_ct_seg.losses:{cls}", summary=summary))


@hookimpl
def register_scorers(register):
    register(
        ScorerEntry(
            name="paper_segmentation",
            target="medkit_ct_seg.metrics:PaperSegmentationScorer",
            summary="pixel accuracy, per-class precision/recall/Dice/IoU and means (absent class = 1.0, as the paper)",
        )
    )
