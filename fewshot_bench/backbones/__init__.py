"""Feature backbones (stage 1): Conv-4, ResNet-12, WRN-28-10; pretraining and feature export."""
