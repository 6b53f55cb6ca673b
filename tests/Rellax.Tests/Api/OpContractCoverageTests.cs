using System.Reflection;
using System.Reflection.Emit;
using NUnit.Framework;

namespace Rellax.Tests.Api;

/// <summary>
/// Issue 21 item 5: every method of every kernel contract (the internal interfaces the backends implement:
/// <c>IPrimitiveKernels</c>, <c>IInt8LinearKernels</c>, <c>ICfloraKernels</c>, <c>ICfloraAdapterKernels</c>,
/// <c>ISubrKernels</c>, <c>IAttentionKernels</c>, <c>IBackwardKernels</c>) has a plain reference (a static method of a
/// <c>*Reference</c> class) and at least one oracle test that reaches that reference. The checked-in map
/// <c>tests/Rellax.Tests/Api/op-contracts.txt</c> lists, per contract method, its reference methods and tests; this test
/// checks it both ways against the assemblies, so a contract method added without a map line (or a line whose method,
/// reference or test is gone) fails, and it follows each listed test's calls through the test assembly's IL (lambdas,
/// local functions and helpers included) to prove that one of them calls a listed reference.
/// </summary>
[TestFixture]
public sealed class OpContractCoverageTests
{
    private static readonly Assembly Kernels = typeof(Rellax.Kernels.ComputeBackend).Assembly;
    private static readonly Assembly Tests = typeof(OpContractCoverageTests).Assembly;

    /// <summary>One map line: a contract method's key, its references and its tests (<c>Class.Method</c> each).</summary>
    private sealed record Entry(int Line, string Key, string[] References, string[] Tests);

    private static string MapPath => Path.Combine(TestData.RepoRoot(), "tests", "Rellax.Tests", "Api", "op-contracts.txt");

    private static List<Entry> ReadMap()
    {
        var entries = new List<Entry>();
        var lines = File.ReadAllLines(MapPath);
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var parts = line.Split('|', StringSplitOptions.TrimEntries);
            Assert.That(parts, Has.Length.EqualTo(3), $"{MapPath}:{i + 1}: expected 'contract method | references | tests'");
            static string[] List(string s) => s.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            entries.Add(new Entry(i + 1, parts[0], List(parts[1]), List(parts[2])));
        }
        return entries;
    }

    /// <summary>The contracts: the top-level interfaces of Rellax.Kernels that some class of it implements.</summary>
    private static List<Type> Contracts()
    {
        var types = Kernels.GetTypes();
        return [.. types.Where(t => t.IsInterface && !t.IsNested && t.Namespace == "Rellax.Kernels"
                && types.Any(c => c.IsClass && !c.IsAbstract && t.IsAssignableFrom(c)))
            .OrderBy(t => t.Name, StringComparer.Ordinal)];
    }

    /// <summary>Each contract method's map key: <c>Interface.Method</c>, or <c>Interface.Method#N</c> (N parameters) when the
    /// interface has overloads of that name.</summary>
    private static Dictionary<string, MethodInfo> ContractMethods()
    {
        var result = new Dictionary<string, MethodInfo>(StringComparer.Ordinal);
        foreach (var contract in Contracts())
        {
            var methods = contract.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.DeclaredOnly);
            foreach (var m in methods)
            {
                bool overloaded = methods.Count(o => o.Name == m.Name) > 1;
                result.Add($"{contract.Name}.{m.Name}{(overloaded ? $"#{m.GetParameters().Length}" : "")}", m);
            }
        }
        return result;
    }

    [Test]
    public void TheContractsAreTheInterfacesTheBackendsImplement()
    {
        // A floor, not the list: the map test below is what enumerates them. This catches a discovery rule that finds nothing.
        Assert.That(Contracts().Select(t => t.Name), Is.SupersetOf(new[] { "IPrimitiveKernels", "ICfloraKernels", "ISubrKernels", "IAttentionKernels", "IBackwardKernels" }));
        Assert.That(ContractMethods(), Has.Count.GreaterThan(30));
    }

    [Test]
    public void EveryContractMethodHasOneMapLineAndEveryLineAContractMethod()
    {
        var methods = ContractMethods();
        var map = ReadMap();
        var duplicated = map.GroupBy(e => e.Key).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        var missing = methods.Keys.Except(map.Select(e => e.Key)).Order(StringComparer.Ordinal).ToList();
        var stale = map.Where(e => !methods.ContainsKey(e.Key)).Select(e => $"line {e.Line}: {e.Key}").ToList();
        Assert.Multiple(() =>
        {
            Assert.That(missing, Is.Empty, $"contract methods with no line in {MapPath} (add 'Interface.Method | Reference.Method | TestClass.TestMethod')");
            Assert.That(stale, Is.Empty, $"lines of {MapPath} naming no contract method");
            Assert.That(duplicated, Is.Empty, "contract methods listed twice");
        });
    }

    [Test]
    public void EveryLineNamesReferencesAndTestsThatExist()
    {
        var problems = new List<string>();
        foreach (var e in ReadMap())
        {
            if (e.References.Length == 0) problems.Add($"line {e.Line} {e.Key}: no reference");
            if (e.Tests.Length == 0) problems.Add($"line {e.Line} {e.Key}: no test");
            foreach (string r in e.References)
                if (ReferenceMethods(r).Count == 0) problems.Add($"line {e.Line} {e.Key}: no static method {r} in a *Reference class of Rellax.Kernels");
            foreach (string t in e.Tests)
                if (TestMethod(t) is null) problems.Add($"line {e.Line} {e.Key}: no NUnit test method {t} in the test assembly");
        }
        Assert.That(problems, Is.Empty);
    }

    [Test]
    public void SomeTestOfEveryLineCallsItsReference()
    {
        var problems = new List<string>();
        foreach (var e in ReadMap())
        {
            var references = e.References.SelectMany(ReferenceMethods).Select(m => (m.Module, m.MetadataToken)).ToHashSet();
            var tests = e.Tests.Select(TestMethod).OfType<MethodInfo>().ToList();
            if (references.Count == 0 || tests.Count == 0) continue;   // reported by the test above
            if (!tests.Any(t => Reaches(t, references)))
                problems.Add($"line {e.Line} {e.Key}: none of [{string.Join(", ", e.Tests)}] calls [{string.Join(", ", e.References)}]");
        }
        Assert.That(problems, Is.Empty);
    }

    // ---- lookups ------------------------------------------------------------------------------------------------------

    /// <summary>The static methods named <c>Class.Method</c> of a <c>*Reference</c> class of Rellax.Kernels.</summary>
    private static List<MethodInfo> ReferenceMethods(string name)
    {
        int dot = name.LastIndexOf('.');
        if (dot <= 0) return [];
        string type = name[..dot], method = name[(dot + 1)..];
        if (!type.EndsWith("Reference", StringComparison.Ordinal)) return [];
        return [.. Kernels.GetTypes().Where(t => t.Name == type)
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .Where(m => m.Name == method)];
    }

    /// <summary>The test method <c>Class.Method</c> (NUnit <c>[Test]</c>, <c>[TestCase]</c> or <c>[TestCaseSource]</c>), or null.</summary>
    private static MethodInfo? TestMethod(string name)
    {
        int dot = name.LastIndexOf('.');
        if (dot <= 0) return null;
        string type = name[..dot], method = name[(dot + 1)..];
        return Tests.GetTypes().Where(t => t.Name == type)
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .FirstOrDefault(m => m.Name == method && m.GetCustomAttributes().Any(a => a is TestAttribute or TestCaseAttribute or TestCaseSourceAttribute));
    }

    // ---- IL call graph ------------------------------------------------------------------------------------------------

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>Whether <paramref name="start"/> calls one of <paramref name="targets"/>, directly or through methods of the
    /// test assembly (its helpers, lambdas and local functions: calls, <c>newobj</c> and <c>ldftn</c>), breadth first.</summary>
    private static bool Reaches(MethodBase start, HashSet<(Module, int)> targets)
    {
        var seen = new HashSet<MethodBase> { start };
        var queue = new Queue<MethodBase>([start]);
        while (queue.Count > 0)
        {
            var method = queue.Dequeue();
            foreach (var callee in Callees(method))
            {
                if (targets.Contains((callee.Module, callee.MetadataToken))) return true;
                if (callee.Module.Assembly == Tests && seen.Add(callee)) queue.Enqueue(callee);
            }
        }
        return false;
    }

    private static IEnumerable<MethodBase> Callees(MethodBase method)
    {
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException) { yield break; }
        if (il is null) yield break;
        var typeArgs = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        var methodArgs = method is MethodInfo { IsGenericMethod: true } && !method.IsGenericMethodDefinition ? method.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            short value = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            i += il[i] == 0xFE ? 2 : 1;
            var op = OpCodesByValue[value];
            int size = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
            if (op.OperandType == OperandType.InlineMethod)
            {
                MethodBase? callee = null;
                try { callee = method.Module.ResolveMethod(BitConverter.ToInt32(il, i), typeArgs, methodArgs); }
                catch (Exception e) when (e is ArgumentException or BadImageFormatException or TypeLoadException or FileNotFoundException) { }
                if (callee is not null) yield return callee;
            }
            i += size;
        }
    }
}
