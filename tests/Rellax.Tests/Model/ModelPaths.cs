using NUnit.Framework;
namespace Rellax.Tests.Model;

/// <summary>Finds the embedded default model (models/stories260K in the repository) from the test assembly.</summary>
internal static class ModelPaths
{
    public static string Stories260K
    {
        get
        {
            for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "stories260K");
                if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
            }
            throw new DirectoryNotFoundException("models/stories260K not found above " + TestContext.CurrentContext.TestDirectory);
        }
    }
}
