using System.Buffers.Binary;
using System.Text;

namespace PeftSharp.Native;

/// <summary>
/// Marks one symbol-version requirement (e.g. GLIBCXX_3.4.32) of an ELF64 shared object as weak
/// (VER_FLG_WEAK), so that the dynamic loader accepts a libstdc++ that lacks it. TorchSharp's shim
/// references that version only for std::ios_base_library_init(), which it never calls.
/// </summary>
internal static class ElfVersionPatch
{
    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    /// <summary>Returns true when <paramref name="elf"/> needs <paramref name="version"/> non-weakly.</summary>
    public static bool NeedsStrictly(ReadOnlySpan<byte> elf, string version) =>
        FindVernauxFlags(elf, version) is { } off && (BinaryPrimitives.ReadUInt16LittleEndian(elf[off..]) & VerFlgWeak) == 0;

    /// <summary>Sets the weak flag on <paramref name="version"/>'s requirement; false when it is absent.</summary>
    public static bool MakeWeak(Span<byte> elf, string version)
    {
        if (FindVernauxFlags(elf, version) is not { } off) return false;
        var flags = BinaryPrimitives.ReadUInt16LittleEndian(elf[off..]);
        BinaryPrimitives.WriteUInt16LittleEndian(elf[off..], (ushort)(flags | VerFlgWeak));
        return true;
    }

    // Offset of vna_flags of the Vernaux entry naming `version`, or null.
    static int? FindVernauxFlags(ReadOnlySpan<byte> elf, string version)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1) throw new InvalidDataException("only little-endian ELF64 is supported");
        long shoff = BinaryPrimitives.ReadInt64LittleEndian(elf[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3a..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(elf[0x3c..]);
        var target = Encoding.ASCII.GetBytes(version);
        for (int i = 0; i < shnum; i++)
        {
            var sh = elf.Slice(checked((int)shoff + i * shentsize), shentsize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]) != ShtGnuVerneed) continue;
            long secOff = BinaryPrimitives.ReadInt64LittleEndian(sh[0x18..]);
            int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[0x28..]);
            var strSh = elf.Slice(checked((int)shoff + link * shentsize), shentsize);
            long strOff = BinaryPrimitives.ReadInt64LittleEndian(strSh[0x18..]);

            long vn = secOff;
            while (true)
            {
                int cnt = BinaryPrimitives.ReadUInt16LittleEndian(elf[(int)(vn + 2)..]);
                uint aux = BinaryPrimitives.ReadUInt32LittleEndian(elf[(int)(vn + 8)..]);
                uint next = BinaryPrimitives.ReadUInt32LittleEndian(elf[(int)(vn + 12)..]);
                long a = vn + aux;
                for (int j = 0; j < cnt; j++)
                {
                    uint name = BinaryPrimitives.ReadUInt32LittleEndian(elf[(int)(a + 8)..]);
                    var s = elf[(int)(strOff + name)..];
                    int end = s.IndexOf((byte)0);
                    if (end >= 0 && s[..end].SequenceEqual(target)) return (int)(a + 4);
                    uint anext = BinaryPrimitives.ReadUInt32LittleEndian(elf[(int)(a + 12)..]);
                    if (anext == 0) break;
                    a += anext;
                }
                if (next == 0) break;
                vn += next;
            }
        }
        return null;
    }
}
