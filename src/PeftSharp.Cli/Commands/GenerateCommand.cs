using System.CommandLine;
using System.Text.Json;
using PeftSharp.Generation;
using PeftSharp.Generation.Composition;
using PeftSharp.Models;
using PeftSharp.Tokenization;

namespace PeftSharp.Cli.Commands;

/// <summary><c>peftsharp generate</c>: greedy or sampled continuation of a prompt.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = Options.Model(required: false);
        var adapter = AdapterSet.Option();
        var rowAdapters = AdapterSet.RowsOption("prompt (--prompts lines, or the one prompt)");
        var promptsFile = new Option<string>("--prompts")
        {
            Description = "JSON Lines file of prompts, one {\"prompt\": \"...\", \"adapter\": \"a\"} per line (adapter optional; 'base' for none), generated as one batch",
        }.Help(value: "<file.jsonl>");
        var prompt = new Option<string>("--prompt") { Description = "prompt text, encoded with the model folder's tokenizer.json" }.Help(value: "<text>");
        var promptIds = Options.TokenIds("--prompt-ids", "prompt as token ids, comma-separated (instead of --prompt)");
        var maxNew = Options.WholeNumber("--max-new-tokens", "most tokens to generate (0 or more)").Default(64, "64");
        var greedy = new Option<bool>("--greedy") { Description = "pick the most likely token at each step; the default unless --temperature, --top-p or --top-k is given" };
        var temperature = Options.Number("--temperature", "sample, with the scores divided by this (> 0); 0 means greedy decoding, as in llama.cpp and vLLM");
        var topP = Options.Number("--top-p", "sample among the most likely tokens whose probabilities add up to this (0 to 1; 1 = off)");
        var topK = Options.WholeNumber("--top-k", "sample among the k most likely tokens (0 = off)");
        var repetition = Options.Number("--repetition-penalty", "divide the scores of tokens already in the sequence by this (> 0; 1 = off)").Default(1.0, "1");
        var seed = Options.Seed("random seed for sampling (default: libtorch's global generator)");
        var json = new Option<bool>("--json") { Description = "print {\"ids\": [...], \"text\": \"...\"} (with --dynamic-fusion also \"fusion_weights\": each generated token's expert weights)" };
        var chat = new Option<bool>("--chat")
        {
            Description = "send --prompt as a user message through the model's chat template (chat_template in tokenizer_config.json "
                + "or chat_template.jinja; ChatML or Llama 3 when there is none) and open the assistant's turn",
        };
        var dtype = Options.DType();
        var device = Options.Device();
        var tucoScale = Options.Number("--tuco-scale", "scale the adapter's fine-tuning component in every block (TuCo): 1 = the tuned model, 0 = the base, above 1 amplifies")
            .Must(v => v is double d && double.IsFinite(d), "must be a finite number").Help(value: "<s>");
        var taskId = TaskRouting.Option();
        var cmd = new Command("generate", "Generate text with a model (and adapter)")
            { model, adapter, rowAdapters, prompt, promptIds, promptsFile, maxNew, greedy, temperature, topP, topK, repetition, seed, json, chat, dtype, device, tucoScale, taskId };
        var proxy = new ProxyOptions();
        proxy.AddTo(cmd);
        cmd.SetAction(r =>
        {
            var output = r.InvocationConfiguration.Output;
            var modelDir = r.GetValue(model) ?? Options.BundledModel;
            // Everything the command line says is checked before the weights load.
            var t = r.GetValue(temperature);
            bool sample = !r.GetValue(greedy) && t != 0 && (t is not null || r.GetValue(topP) is not null || r.GetValue(topK) is not null);
            var options = new GenerationOptions
            {
                MaxNewTokens = r.GetValue(maxNew) ?? 64,
                DoSample = sample,
                Temperature = t ?? 1.0,
                TopP = r.GetValue(topP) ?? 1.0,
                TopK = r.GetValue(topK) ?? 0,
                RepetitionPenalty = r.GetValue(repetition) ?? 1.0,
                Seed = r.GetValue(seed),
            }.Validate();
            var config = ModelConfig.Load(modelDir);
            bool proxied = proxy.Check(r, modelDir, config);
            options = options with { EosTokenIds = config.EosTokenIds, PadTokenId = config.PadTokenId };
            var tokenizer = File.Exists(Path.Combine(modelDir, "tokenizer.json")) ? HfTokenizer.Load(modelDir) : null;
            var rows = r.GetValue(rowAdapters);
            List<int[]> prompts;
            if (r.GetValue(promptsFile) is { } file)
            {
                var tok = tokenizer ?? throw new ArgumentException($"--prompts needs {modelDir}/tokenizer.json");
                var lines = PromptLines.Read(file);
                if (lines.Any(l => l.Adapter is not null))
                {
                    if (rows is { Length: > 0 }) throw new ArgumentException($"--row-adapters: {file} names adapters already; give them in one place");
                    rows = lines.Select(l => l.Adapter ?? AdapterSet.BaseRow).ToArray();
                }
                prompts = lines.Select(l => r.GetValue(chat) ? tok.GetChatTemplate().Encode(tok, [new ChatMessage("user", l.Prompt)], addGenerationPrompt: true).Ids : tok.Encode(l.Prompt)).ToList();
            }
            else if (r.GetValue(promptIds) is { Length: > 0 } given) // an array option not given parses as empty
            {
                Options.CheckTokenIds("--prompt-ids", given.Select(i => (long)i), config.VocabSize, modelDir);
                prompts = [given];
            }
            else if (r.GetValue(prompt) is { } text)
            {
                var tok = tokenizer ?? throw new ArgumentException($"--prompt needs {modelDir}/tokenizer.json; use --prompt-ids instead");
                // As apply_chat_template(add_generation_prompt=True): the template writes its own special tokens.
                prompts = [r.GetValue(chat) ? tok.GetChatTemplate().Encode(tok, [new ChatMessage("user", text)], addGenerationPrompt: true).Ids : tok.Encode(text)];
            }
            else throw new ArgumentException("give --prompt TEXT, --prompt-ids 1,2,3 or --prompts FILE.jsonl");
            if (config.BosTokenId is { } bos) prompts = prompts.Select(p => p.Length == 0 ? [bos] : p).ToList();
            var adapters = AdapterSet.Parse(r.GetValue(adapter), rows);
            adapters.CheckRows(prompts.Count, "the prompts");

            var scale = r.GetValue(tucoScale);
            if (scale is not null && (proxied || rows is { Length: > 0 }))
                throw new ArgumentException("--tuco-scale steers one adapted model: leave out --proxy-base and --row-adapters");
            var m = adapters.Load(modelDir, r.GetValue(dtype), Options.ParseDevice(r.GetValue(device)!));
            using var tasks = TaskRouting.Use(m, r.GetValue(taskId), prompts.Count);
            if (scale is double sc)
                m = new TuningScaled(m as PeftSharp.Peft.PeftModel
                    ?? throw new ArgumentException("--tuco-scale scales an adapter's contribution: give --adapter DIR"), sc);
            // Proxy-tuning steers m (its rows keep their adapters) with the small pair's correction.
            var decoder = proxied ? proxy.Wrap(r, m, r.GetValue(dtype), m.Device) : m;
            // Dynamic fusion's weights at each step's last position: step s chose every row's token s.
            var steps = new List<double[,]>();
            if (decoder is DynamicLogitFusion fusion) fusion.Observer = w => steps.Add(LastPosition(w));
            var results = adapters.Run(m, () => TextGenerator.Generate(decoder, prompts, options));
            for (int i = 0; i < results.Count; i++)
            {
                var generated = results[i];
                var decoded = tokenizer?.Decode(generated, skipSpecialTokens: true);
                if (r.GetValue(json) && decoder is DynamicLogitFusion)
                {
                    var weights = steps.Take(generated.Length - prompts[i].Length)
                        .Select(s => Enumerable.Range(0, s.GetLength(1)).Select(t => Math.Round(s[i, t], 6)).ToArray());
                    output.WriteLine(JsonSerializer.Serialize(new { ids = generated, text = decoded, fusion_weights = weights }));
                }
                else if (r.GetValue(json))
                    output.WriteLine(JsonSerializer.Serialize(new { ids = generated, text = decoded }));
                else
                    output.WriteLine(decoded ?? string.Join(",", generated));
            }
            return 0;
        });
        return cmd;
    }

    // [B, T, E] weights -> each row's weights at the last position
    static double[,] LastPosition(TorchSharp.torch.Tensor weights)
    {
        long b = weights.shape[0], e = weights.shape[2];
        var last = weights.select(1, -1).contiguous().data<double>().ToArray();
        var rows = new double[b, e];
        for (long i = 0; i < b; i++)
            for (long t = 0; t < e; t++) rows[i, t] = last[i * e + t];
        return rows;
    }
}
