using System.CommandLine;
using System.Text.Json;
using PeftSharp.Generation;
using PeftSharp.Tokenization;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp generate</c>: greedy or sampled continuation of a prompt.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = Options.Model(required: false);
        var adapter = new Option<string>("--adapter") { Description = "PEFT adapter folder to apply" };
        var prompt = new Option<string>("--prompt") { Description = "prompt text (needs tokenizer.json in the model folder)" };
        var promptIds = new Option<string>("--prompt-ids") { Description = "prompt token ids, comma-separated" };
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 64, Description = "tokens to generate at most" };
        var greedy = new Option<bool>("--greedy") { Description = "always pick the most likely token (default unless a sampling option is given)" };
        var temperature = new Option<double?>("--temperature") { Description = "sample with this temperature" };
        var topP = new Option<double?>("--top-p") { Description = "nucleus sampling: keep tokens up to this cumulative probability" };
        var topK = new Option<int?>("--top-k") { Description = "sample among the k most likely tokens" };
        var repetition = new Option<double>("--repetition-penalty") { DefaultValueFactory = _ => 1.0, Description = "penalise tokens already present (1 = off)" };
        var seed = new Option<long?>("--seed") { Description = "random seed for sampling" };
        var json = new Option<bool>("--json") { Description = "print {\"ids\": [...], \"text\": \"...\"}" };
        var chat = new Option<bool>("--chat")
        {
            Description = "send --prompt as a user message through the model's chat template (chat_template in tokenizer_config.json "
                + "or chat_template.jinja; ChatML or Llama 3 when there is none) and open the assistant's turn",
        };
        var dtype = Options.DType();
        var device = Options.Device();
        var cmd = new Command("generate", "Generate text with a model (and adapter)")
            { model, adapter, prompt, promptIds, maxNew, greedy, temperature, topP, topK, repetition, seed, json, chat, dtype, device };
        cmd.SetAction(CliErrors.Guard(r =>
        {
            var modelDir = r.GetValue(model) ?? Options.BundledModel;
            var (baseModel, m) = Options.Load(modelDir, r.GetValue(adapter), Options.ParseDType(r.GetValue(dtype)!), Options.ParseDevice(r.GetValue(device)!));
            var tokenizer = File.Exists(Path.Combine(modelDir, "tokenizer.json")) ? HfTokenizer.Load(modelDir) : null;
            int[] ids;
            if (r.GetValue(promptIds) is { } idText)
                ids = idText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
            else if (r.GetValue(prompt) is { } text)
            {
                var t = tokenizer ?? throw new ArgumentException($"--prompt needs {modelDir}/tokenizer.json; use --prompt-ids instead");
                // As apply_chat_template(add_generation_prompt=True): the template writes its own special tokens.
                ids = r.GetValue(chat) ? t.GetChatTemplate().Encode(t, [new ChatMessage("user", text)], addGenerationPrompt: true).Ids : t.Encode(text);
            }
            else throw new ArgumentException("give --prompt TEXT or --prompt-ids 1,2,3");
            if (ids.Length == 0 && baseModel.Config.BosTokenId is { } bos) ids = [bos];
            bool sample = !r.GetValue(greedy) && (r.GetValue(temperature) is not null || r.GetValue(topP) is not null || r.GetValue(topK) is not null);
            var options = new GenerationOptions
            {
                MaxNewTokens = r.GetValue(maxNew),
                DoSample = sample,
                Temperature = r.GetValue(temperature) ?? 1.0,
                TopP = r.GetValue(topP) ?? 1.0,
                TopK = r.GetValue(topK) ?? 0,
                RepetitionPenalty = r.GetValue(repetition),
                Seed = r.GetValue(seed),
                EosTokenIds = baseModel.Config.EosTokenIds,
                PadTokenId = baseModel.Config.PadTokenId,
            };
            var output = TextGenerator.Generate(m, [ids], options)[0];
            var decoded = tokenizer?.Decode(output, skipSpecialTokens: true);
            if (r.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { ids = output, text = decoded }));
            else
                Console.WriteLine(decoded ?? string.Join(",", output));
            return 0;
        }));
        return cmd;
    }
}
