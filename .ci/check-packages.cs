// Checks the packages `dotnet pack` wrote (issue 21 item 1). From the repository root, as .ci/run does:
//   dotnet run .ci/check-packages.cs -- FEED_DIR VERSION
// It checks that
// each of the five exists with its symbols package, its .nuspec carries a description, the README, the licence expression MIT,
// the repository type and commit, and NO dependency on TorchSharp or libtorch in any group (TorchSharp is the tests' oracle, never a
// dependency); each library has its XML docs; Rellax.Kernels embeds every kernels/*.cu and *.cuh; the rellax tool
// carries the command, its settings and the embedded stories260K model, and its deps.json names no torch assembly.
// Prints one line per package and exits 1 naming every problem found.
using System.IO.Compression;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Text.RegularExpressions;
using System.Xml.Linq;

if (args.Length != 2)
{
    Console.Error.WriteLine("usage: dotnet run .ci/check-packages.cs -- FEED_DIR VERSION");
    return 2;
}
string feed = args[0], version = args[1];
string repo = Directory.GetCurrentDirectory(); // run from the repository root (kernels/ is compared with the assembly)
var problems = new List<string>();
void Problem(string package, string what) => problems.Add($"{package}: {what}");

string[] libraries = ["Rellax.Interop", "Rellax.Kernels", "Rellax.Runtime", "Rellax.Rec"];
foreach (string id in libraries.Append("rellax"))
{
    string nupkg = Path.Combine(feed, $"{id}.{version}.nupkg"), snupkg = Path.Combine(feed, $"{id}.{version}.snupkg");
    if (!File.Exists(nupkg)) { Problem(id, $"{nupkg} is missing"); continue; }
    if (!File.Exists(snupkg)) Problem(id, $"{snupkg} (symbols) is missing");
    using var zip = ZipFile.OpenRead(nupkg);
    var files = zip.Entries.Select(e => e.FullName).ToHashSet(StringComparer.Ordinal);
    var nuspecEntry = zip.Entries.SingleOrDefault(e => e.FullName == $"{id}.nuspec");
    if (nuspecEntry is null) { Problem(id, "no .nuspec at the package root"); continue; }
    XDocument nuspec;
    using (var s = nuspecEntry.Open()) nuspec = XDocument.Load(s);
    var meta = nuspec.Root!.Elements().Single(e => e.Name.LocalName == "metadata");
    string? Meta(string name) => meta.Elements().FirstOrDefault(e => e.Name.LocalName == name)?.Value;

    if (Meta("id") != id) Problem(id, $"nuspec id is '{Meta("id")}'");
    if (Meta("version") != version) Problem(id, $"nuspec version is '{Meta("version")}', expected {version}");
    if (string.IsNullOrWhiteSpace(Meta("description"))) Problem(id, "no description");
    string? readme = Meta("readme");
    if (readme is null || !files.Contains(readme)) Problem(id, $"no package README (readme '{readme}')");
    var license = meta.Elements().FirstOrDefault(e => e.Name.LocalName == "license");
    if (license?.Attribute("type")?.Value != "expression" || license.Value != "MIT")
        Problem(id, $"the licence is not the expression MIT: {license?.ToString() ?? "(none)"}");
    var repository = meta.Elements().FirstOrDefault(e => e.Name.LocalName == "repository");
    if (repository?.Attribute("type")?.Value != "git" || !Regex.IsMatch(repository.Attribute("commit")?.Value ?? "", "^[0-9a-f]{40}$"))
        Problem(id, $"no repository type=git with a commit: {repository?.ToString() ?? "(none)"}");

    var dependencies = meta.Descendants().Where(e => e.Name.LocalName == "dependency").Select(e => e.Attribute("id")?.Value ?? "").ToList();
    foreach (string dependency in dependencies.Where(IsTorch)) Problem(id, $"depends on {dependency}");
    foreach (string file in files.Where(f => IsTorch(Path.GetFileName(f)))) Problem(id, $"carries {file}");

    if (id != "rellax")
    {
        foreach (string file in new[] { $"lib/net10.0/{id}.dll", $"lib/net10.0/{id}.xml" })
            if (!files.Contains(file)) Problem(id, $"{file} is missing (assembly and XML docs)");
        if (File.Exists(snupkg))
        {
            using var symbols = ZipFile.OpenRead(snupkg);
            if (!symbols.Entries.Any(e => e.FullName == $"lib/net10.0/{id}.pdb")) Problem(id, $"the symbols package has no lib/net10.0/{id}.pdb");
        }
        if (id == "Rellax.Kernels") CheckKernelSources(zip.GetEntry($"lib/net10.0/{id}.dll"));
    }
    else
    {
        const string tools = "tools/net10.0/any/";
        if (!meta.Descendants().Any(e => e.Name.LocalName == "packageType" && e.Attribute("name")?.Value == "DotnetTool"))
            Problem(id, "not a DotnetTool package");
        foreach (string file in new[] { "rellax.dll", "rellax.runtimeconfig.json", "DotnetToolSettings.xml",
                     "models/stories260K/config.json", "models/stories260K/model.safetensors", "models/stories260K/tokenizer.json" })
            if (!files.Contains(tools + file)) Problem(id, $"{tools}{file} is missing");
        if (zip.GetEntry(tools + "DotnetToolSettings.xml") is { } settings)
        {
            using var s = settings.Open();
            string? command = XDocument.Load(s).Descendants().FirstOrDefault(e => e.Name.LocalName == "Command")?.Attribute("Name")?.Value;
            if (command != "rellax") Problem(id, $"the tool's command is '{command}', expected rellax");
        }
        if (zip.GetEntry(tools + "rellax.deps.json") is { } deps)
        {
            using var reader = new StreamReader(deps.Open());
            if (IsTorch(reader.ReadToEnd())) Problem(id, "rellax.deps.json names a torch assembly");
        }
        foreach (string library in libraries)
            if (!dependencies.Contains(library) && !files.Contains(tools + library + ".dll")) Problem(id, $"{library}.dll is not in the tool");
    }
    Console.WriteLine($"{id} {version}: {files.Count} files, dependencies [{string.Join(", ", dependencies)}]");

    void CheckKernelSources(ZipArchiveEntry? dll)
    {
        if (dll is null) return;
        using var copy = new MemoryStream();
        using (var s = dll.Open()) s.CopyTo(copy);
        copy.Position = 0;
        using var pe = new PEReader(copy);
        var md = pe.GetMetadataReader();
        var resources = md.ManifestResources.Select(h => md.GetString(md.GetManifestResource(h).Name)).ToHashSet();
        var sources = Directory.GetFiles(Path.Combine(repo, "kernels"))
            .Where(f => f.EndsWith(".cu", StringComparison.Ordinal) || f.EndsWith(".cuh", StringComparison.Ordinal))
            .Select(f => "kernels/" + Path.GetFileName(f)).ToList();
        if (sources.Count == 0) Problem(id, $"no kernels/*.cu found under {repo} to compare with");
        foreach (string source in sources.Where(s => !resources.Contains(s))) Problem(id, $"{source} is not embedded in Rellax.Kernels.dll");
    }
}

static bool IsTorch(string text) => text.Contains("torch", StringComparison.OrdinalIgnoreCase);

foreach (string problem in problems) Console.Error.WriteLine("package check: " + problem);
Console.WriteLine(problems.Count == 0 ? "packages: OK" : $"packages: {problems.Count} problem(s)");
return problems.Count == 0 ? 0 : 1;
