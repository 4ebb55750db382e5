using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using PeftSharp.IO;

namespace PeftSharp.Training;

/// <summary>
/// Draws the loss curve (raw and smoothed training loss, held-out loss) into a PNG with no native dependencies:
/// a small RGB canvas, a 5x7 pixel font for the axis labels, and zlib from the BCL for the PNG encoding.
/// </summary>
public static class LossCurvePng
{
    const int W = 800, H = 480, Left = 78, Right = 24, Top = 36, Bottom = 52, Scale = 2;
    static readonly (byte R, byte G, byte B) White = (255, 255, 255), Grid = (228, 228, 228), Axis = (90, 90, 90),
        TrainRaw = (170, 200, 235), TrainSmooth = (31, 100, 180), Eval = (230, 110, 20), Ink = (40, 40, 40);

    /// <summary>Writes the plot; points with non-finite loss are left out. Returns false (and writes nothing) if there is nothing to draw.</summary>
    public static bool Write(string path, IReadOnlyList<(int Step, double Loss)> train, IReadOnlyList<(int Step, double Loss)> eval)
    {
        train = train.Where(p => double.IsFinite(p.Loss)).ToList();
        eval = eval.Where(p => double.IsFinite(p.Loss)).ToList();
        if (train.Count + eval.Count == 0) return false;
        var c = new Canvas(W, H);
        c.Fill(0, 0, W, H, White);

        var all = train.Concat(eval).ToList();
        double x0 = all.Min(p => p.Step), x1 = Math.Max(all.Max(p => p.Step), x0 + 1);
        double y0 = all.Min(p => p.Loss), y1 = all.Max(p => p.Loss);
        var pad = Math.Max((y1 - y0) * 0.06, Math.Abs(y1) * 1e-3 + 1e-6);
        (y0, y1) = (y0 - pad, y1 + pad);
        int Px(double s) => Left + (int)Math.Round((s - x0) / (x1 - x0) * (W - Left - Right));
        int Py(double l) => H - Bottom - (int)Math.Round((l - y0) / (y1 - y0) * (H - Top - Bottom));

        foreach (var t in Ticks(y0, y1, 6))
        {
            c.Line(Left, Py(t), W - Right, Py(t), Grid, 0);
            var label = t.ToString("G4", CultureInfo.InvariantCulture);
            c.Text(Left - 8 - TextWidth(label), Py(t) - 7, label, Ink);
        }
        foreach (var t in Ticks(x0, x1, 8).Where(t => t == Math.Floor(t)))
        {
            c.Line(Px(t), Top, Px(t), H - Bottom, Grid, 0);
            var label = t.ToString("0", CultureInfo.InvariantCulture);
            c.Text(Px(t) - TextWidth(label) / 2, H - Bottom + 8, label, Ink);
        }
        c.Line(Left, Top, Left, H - Bottom, Axis, 0);
        c.Line(Left, H - Bottom, W - Right, H - Bottom, Axis, 0);
        c.Text((W - TextWidth("step")) / 2, H - 22, "step", Ink);
        c.Text(Left, 10, "loss", Ink);

        Polyline(c, train, TrainRaw, 0);
        Polyline(c, Smooth(train), TrainSmooth, 1);
        Polyline(c, eval, Eval, 1);
        foreach (var (s, l) in eval) c.Fill(Px(s) - 3, Py(l) - 3, 7, 7, Eval);

        var lx = W - Right - 150;
        c.Fill(lx, 14, 18, 4, TrainSmooth); c.Text(lx + 24, 9, "train", Ink);
        c.Fill(lx + 90, 14, 18, 4, Eval); c.Text(lx + 114, 9, "eval", Ink);

        AtomicFile.WriteAllBytes(path, c.ToPng());
        return true;

        void Polyline(Canvas canvas, IReadOnlyList<(int Step, double Loss)> pts, (byte, byte, byte) color, int radius)
        {
            for (var i = 1; i < pts.Count; i++) canvas.Line(Px(pts[i - 1].Step), Py(pts[i - 1].Loss), Px(pts[i].Step), Py(pts[i].Loss), color, radius);
            if (pts.Count == 1) canvas.Fill(Px(pts[0].Step) - 2, Py(pts[0].Loss) - 2, 5, 5, color);
        }
    }

    /// <summary>Exponential moving average with bias correction, as TensorBoard's smoothing slider does.</summary>
    static List<(int, double)> Smooth(IReadOnlyList<(int Step, double Loss)> pts, double weight = 0.9)
    {
        var result = new List<(int, double)>(pts.Count);
        double ema = 0, norm = 0;
        foreach (var (s, l) in pts)
        {
            ema = ema * weight + (1 - weight) * l;
            norm = norm * weight + (1 - weight);
            result.Add((s, ema / norm));
        }
        return result;
    }

    /// <summary>Round tick values (1, 2 or 5 times a power of ten) inside [lo, hi].</summary>
    static IEnumerable<double> Ticks(double lo, double hi, int target)
    {
        var raw = (hi - lo) / target;
        var mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        var step = new[] { 1, 2, 5, 10 }.Select(m => m * mag).First(s => s >= raw);
        for (var t = Math.Ceiling(lo / step) * step; t <= hi + step * 1e-9; t += step) yield return Math.Round(t / step) * step;
    }

    static int TextWidth(string s) => s.Length * 6 * Scale;

    sealed class Canvas(int width, int height)
    {
        readonly byte[] rgb = new byte[width * height * 3];

        public void Set(int x, int y, (byte R, byte G, byte B) c)
        {
            if ((uint)x >= (uint)width || (uint)y >= (uint)height) return;
            var i = (y * width + x) * 3;
            (rgb[i], rgb[i + 1], rgb[i + 2]) = c;
        }

        public void Fill(int x, int y, int w, int h, (byte, byte, byte) c)
        {
            for (var j = y; j < y + h; j++)
                for (var i = x; i < x + w; i++) Set(i, j, c);
        }

        /// <summary>Bresenham, stamping a square of side 2*radius+1 at each pixel.</summary>
        public void Line(int xa, int ya, int xb, int yb, (byte, byte, byte) c, int radius)
        {
            int dx = Math.Abs(xb - xa), dy = -Math.Abs(yb - ya), sx = xa < xb ? 1 : -1, sy = ya < yb ? 1 : -1, err = dx + dy;
            while (true)
            {
                Fill(xa - radius, ya - radius, 2 * radius + 1, 2 * radius + 1, c);
                if (xa == xb && ya == yb) return;
                var e2 = 2 * err;
                if (e2 >= dy) { err += dy; xa += sx; }
                if (e2 <= dx) { err += dx; ya += sy; }
            }
        }

        public void Text(int x, int y, string s, (byte, byte, byte) c)
        {
            foreach (var ch in s)
            {
                if (Font.Glyphs.TryGetValue(ch, out var rows))
                    for (var r = 0; r < 7; r++)
                        for (var b = 0; b < 5; b++)
                            if ((rows[r] >> (4 - b) & 1) == 1) Fill(x + b * Scale, y + r * Scale, Scale, Scale, c);
                x += 6 * Scale;
            }
        }

        public byte[] ToPng()
        {
            using var ms = new MemoryStream();
            ms.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A]);
            var header = new byte[13];
            BinaryPrimitives.WriteInt32BigEndian(header, width);
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), height);
            header[8] = 8;  // bits per channel
            header[9] = 2;  // colour type: RGB
            Chunk(ms, "IHDR", header);
            using var raw = new MemoryStream();
            using (var z = new ZLibStream(raw, CompressionLevel.Optimal, leaveOpen: true))
                for (var y = 0; y < height; y++)
                {
                    z.WriteByte(0); // filter: none
                    z.Write(rgb, y * width * 3, width * 3);
                }
            Chunk(ms, "IDAT", raw.ToArray());
            Chunk(ms, "IEND", []);
            return ms.ToArray();
        }

        static void Chunk(Stream s, string type, byte[] data)
        {
            Span<byte> len = stackalloc byte[4];
            BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
            s.Write(len);
            var typed = new byte[4 + data.Length];
            System.Text.Encoding.ASCII.GetBytes(type, typed);
            data.CopyTo(typed, 4);
            s.Write(typed);
            BinaryPrimitives.WriteUInt32BigEndian(len, Crc32(typed));
            s.Write(len);
        }

        static readonly uint[] CrcTable = Enumerable.Range(0, 256).Select(n =>
        {
            var c = (uint)n;
            for (var k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            return c;
        }).ToArray();

        static uint Crc32(byte[] bytes)
        {
            var c = 0xFFFFFFFFu;
            foreach (var b in bytes) c = CrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
            return c ^ 0xFFFFFFFFu;
        }
    }

    /// <summary>A 5x7 pixel font: each glyph is 7 rows of 5 bits, most significant bit on the left.</summary>
    static class Font
    {
        public static readonly Dictionary<char, int[]> Glyphs = Parse(new Dictionary<char, string>
        {
            ['0'] = "01110 10001 10011 10101 11001 10001 01110", ['1'] = "00100 01100 00100 00100 00100 00100 01110",
            ['2'] = "01110 10001 00001 00010 00100 01000 11111", ['3'] = "11111 00010 00100 00010 00001 10001 01110",
            ['4'] = "00010 00110 01010 10010 11111 00010 00010", ['5'] = "11111 10000 11110 00001 00001 10001 01110",
            ['6'] = "00110 01000 10000 11110 10001 10001 01110", ['7'] = "11111 00001 00010 00100 01000 01000 01000",
            ['8'] = "01110 10001 10001 01110 10001 10001 01110", ['9'] = "01110 10001 10001 01111 00001 00010 01100",
            ['.'] = "00000 00000 00000 00000 00000 01100 01100", ['-'] = "00000 00000 00000 11111 00000 00000 00000",
            ['+'] = "00000 00100 00100 11111 00100 00100 00000", ['E'] = "11111 10000 10000 11110 10000 10000 11111",
            ['a'] = "00000 00000 01110 00001 01111 10001 01111", ['e'] = "00000 00000 01110 10001 11111 10000 01110",
            ['i'] = "00100 00000 01100 00100 00100 00100 01110", ['l'] = "01100 00100 00100 00100 00100 00100 01110",
            ['n'] = "00000 00000 10110 11001 10001 10001 10001", ['o'] = "00000 00000 01110 10001 10001 10001 01110",
            ['p'] = "00000 11110 10001 10001 11110 10000 10000", ['r'] = "00000 00000 10110 11001 10000 10000 10000",
            ['s'] = "00000 00000 01110 10000 01110 00001 11110", ['t'] = "01000 01000 11100 01000 01000 01001 00110",
            ['v'] = "00000 00000 10001 10001 10001 01010 00100",
        });

        static Dictionary<char, int[]> Parse(Dictionary<char, string> src) =>
            src.ToDictionary(kv => kv.Key, kv => kv.Value.Split(' ').Select(r => Convert.ToInt32(r, 2)).ToArray());
    }
}
