using System.Text;
using VhostCompat.Compat;

namespace VhostCompat.Tests.Compat;

/// <summary>
/// Found by the compat fuzz target: System.Text.Json checks structure but not the text inside
/// strings, so a record, lock file or capability document with invalid UTF-8 (or a lone surrogate
/// escape) in a string escaped from the parsers as <see cref="InvalidOperationException"/> instead
/// of their documented rejection.
/// </summary>
public sealed class CompatJsonUnicodeTests
{
    public static TheoryData<string, byte[]> Documents()
    {
        byte[] invalidUtf8 = [.. "{\"format\":\""u8, 0xEB, 0x80, .. "\",\"version\":1}"u8];
        byte[] invalidName = [.. "{\"x"u8, 0xFF, .. "\":1}"u8];
        byte[] loneSurrogate = Encoding.UTF8.GetBytes("{\"format\":\"\\ud800\",\"version\":1}");
        byte[] nested = Encoding.UTF8.GetBytes("{\"format\":\"vhostcompat-profile-lock\",\"version\":1,\"profiles\":[{\"id\":\"\\udfff\"}]}");
        return new()
        {
            { "invalid UTF-8 in a value", invalidUtf8 },
            { "invalid UTF-8 in a property name", invalidName },
            { "lone surrogate escape", loneSurrogate },
            { "lone surrogate in a nested array", nested },
        };
    }

    [Theory]
    [MemberData(nameof(Documents))]
    public void Acked_state_record_with_undecodable_string_is_rejected_as_corrupt(string what, byte[] utf8)
    {
        var act = () => AckedStateRecord.Parse(utf8, "rec.json");
        act.Should().Throw<AckedStateCorruptException>(what).WithMessage("*not valid Unicode*");
    }

    [Theory]
    [MemberData(nameof(Documents))]
    public void Lock_file_with_undecodable_string_is_rejected(string what, byte[] utf8)
    {
        var act = () => ProfileLock.Parse(utf8, "lock.json");
        act.Should().Throw<CompatDocumentException>(what).WithMessage("*not valid Unicode*");
    }

    [Theory]
    [MemberData(nameof(Documents))]
    public void Capability_document_with_undecodable_string_is_rejected(string what, byte[] utf8)
    {
        var act = () => CapabilityDocument.Parse(utf8, "caps.json");
        act.Should().Throw<CompatDocumentException>(what).WithMessage("*not valid Unicode*");
    }
}
