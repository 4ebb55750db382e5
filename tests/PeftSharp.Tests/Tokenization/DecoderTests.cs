using PeftSharp.Tokenization;

namespace PeftSharp.Tests.Tokenization;

/// <summary>
/// Decoders on token lists no vocabulary produces in the reference fixtures; the expected strings are what HF's
/// <c>tokenizers</c> 0.22 decoders (its Node binding) returned for the same lists.
/// </summary>
public class DecoderTests
{
    static string Decode(IDecoder decoder, params string[] tokens) => string.Concat(decoder.DecodeChain([.. tokens]));

    [Fact]
    public void Metaspace_drops_every_replacement_of_the_first_token_unless_the_scheme_is_never()
    {
        Assert.Equal("a b  c", Decode(new MetaspaceDecoder('▁', PrependScheme.Always), "▁▁a▁", "▁b", "▁▁c"));
        Assert.Equal("x y", Decode(new MetaspaceDecoder('▁', PrependScheme.First), "x▁", "▁y"));
        Assert.Equal("  a  b  c", Decode(new MetaspaceDecoder('▁', PrependScheme.Never), "▁▁a▁", "▁b", "▁▁c"));
    }

    [Fact]
    public void Strip_cuts_each_token_at_most_start_and_stop_times()
    {
        Assert.Equal(" a b", Decode(new StripDecoder(' ', 2, 1), "   a  ", " b "));
    }

    [Fact]
    public void Byte_fallback_gives_one_replacement_char_per_byte_of_an_invalid_run()
    {
        Assert.Equal("\uFFFD\uFFFDa\uFFFD\uFFFD\uFFFD", Decode(new ByteFallbackDecoder(), "<0xE4>", "<0xBD>", "a", "<0xC3>", "<0xA9>", "<0xff>"));
        Assert.Equal("中é", Decode(new ByteFallbackDecoder(), "<0xE4>", "<0xB8>", "<0xAD>", "<0xC3>", "<0xA9>"));
    }
}
