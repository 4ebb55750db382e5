namespace PeftSharp.Tuners.BitFit;

/// <summary>
/// BitFit (Ben Zaken et al., 2022, https://arxiv.org/abs/2106.10199): only bias terms train. Each adapter holds its own
/// copy of the targeted biases (<c>bitfit_bias</c>, starting at the base values), so adapters can be switched, disabled
/// and merged like any other. Without <c>target_modules</c>, every module with a bias is targeted (the classifier head
/// of SEQ_CLS models excepted: it is a modules_to_save copy). Not a PEFT method: peft_type "BITFIT" is ours.
/// </summary>
public sealed record BitFitConfig : LayerTunerConfig
{
    public override string PeftType => "BITFIT";
}
