"""Built-in evaluators: saliency (Acc / IoU / max F-beta / MAE) and CorLoc."""
