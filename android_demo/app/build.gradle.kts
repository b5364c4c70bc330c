plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.edgerec.demo"
    compileSdk = 34
    defaultConfig {
        applicationId = "org.edgerec.demo"
        minSdk = 26
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
}

dependencies {
    // The ExecuTorch runtime (with XNNPACK and the training module). Keep its version on the
    // same release line as the executorch package that exported the bundle (1.4.x).
    implementation("org.pytorch:executorch-android:1.0.0")
    implementation("com.facebook.soloader:soloader:0.10.5")
    implementation("androidx.appcompat:appcompat:1.7.0")
}
